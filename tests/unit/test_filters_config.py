"""Filter definitions: the shipped folders load, every bad input names its file and field, versions are
discovered by folder, partition keys round-trip, and FilterPaths lays outputs out as the seed does."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery_assets.filters.config import (
    FilterConfigError,
    ThemeKeywordsRule,
    load_filter,
    parse_prompt,
)
from distillery_assets.filters.paths import (
    FilterPaths,
    filter_versions,
    filters_root,
    find_version,
    parse_partition_key,
    partition_key,
)
from tests.support.filters_defs import SHIPPED, copy_filter, edit_config


def test_shipped_filters_load_and_are_discovered():
    keys = [v.key for v in filter_versions(SHIPPED)]
    assert {"educational_value.v1", "deep_red_theme.v1", "deep_red_theme.v2"} <= set(keys)
    for v in filter_versions(SHIPPED):
        d = load_filter(v.folder)
        assert (d.name, d.version) == (v.name, v.version)
        assert abs(sum(x.weight for x in d.config.scoring.dimensions.values()) - 1.0) < 1e-6
        assert (v.folder / "README.md").is_file()
    edu = load_filter(SHIPPED / "educational_value" / "v1")
    kinds = [s.asset for s in edu.config.sources]
    assert "gutenberg_chunks" in kinds and {"story_corpus", "encyclopedia_corpus"} & set(kinds)
    assert edu.config.oracle.temperature == 0.3 and edu.config.oracle.max_words == 800


def test_deep_red_theme_uses_the_theme_keyword_filter_and_a_temporal_gate():
    v1 = load_filter(SHIPPED / "deep_red_theme" / "v1")
    v2 = load_filter(SHIPPED / "deep_red_theme" / "v2")
    rule = v1.prefilter.rules[0]
    assert isinstance(rule, ThemeKeywordsRule) and rule.file == "theme/theme_keywords.json"
    assert "temporal_fit" in v1.config.scoring.gatekeeper_rules
    assert [s.asset for s in v1.config.sources] == ["gutenberg_chunks"]
    # every keyword theme of seed 003 belongs to exactly one dimension
    import json

    themes = json.loads((Path(__file__).resolve().parents[2] / "data/config/theme/theme_keywords.json").read_text())
    used = [t for d in v1.config.scoring.dimensions.values() for t in d.keyword_themes]
    assert sorted(used) == sorted(themes)
    # v2 differs in config
    assert v2.config != v1.config and v2.prefilter.rules[0].min_matches == 3


def test_missing_weight_names_file_and_field(tmp_path):
    folder = copy_filter(tmp_path)
    path = edit_config(folder, lambda c: c["scoring"]["dimensions"]["clarity"].pop("weight"))
    with pytest.raises(FilterConfigError) as err:
        load_filter(folder)
    assert str(path) in str(err.value) and "scoring.dimensions.clarity.weight" in str(err.value)


def test_unknown_field_names_file_and_field(tmp_path):
    folder = copy_filter(tmp_path)
    path = edit_config(folder, lambda c: c["scoring"]["dimensions"]["clarity"].__setitem__("wieght", 0.2))
    with pytest.raises(FilterConfigError) as err:
        load_filter(folder)
    assert str(path) in str(err.value) and "scoring.dimensions.clarity.wieght" in str(err.value)
    folder2 = copy_filter(tmp_path / "b")
    edit_config(folder2, lambda c: c.__setitem__("extra_section", {}))
    with pytest.raises(FilterConfigError, match="extra_section"):
        load_filter(folder2)


@pytest.mark.parametrize("change,field", [
    (lambda c: c["scoring"]["dimensions"]["clarity"].__setitem__("weight", 0.5), "sum to"),
    (lambda c: c["scoring"]["tiers"]["not_educational"].__setitem__("threshold", 1.0), "every document needs a tier"),
    (lambda c: c["scoring"]["dimensions"]["coherence"].pop("gatekeeper_threshold"), "gatekeeper_threshold"),
    (lambda c: c["sources"][0].__setitem__("asset", "no_such_asset"), "sources.0"),
    (lambda c: c["oracle"].__setitem__("mode", "labels"), "labels"),
    (lambda c: c["filter"].__setitem__("version", "2.0"), "filter.version"),
    (lambda c: c["filter"].__setitem__("name", "other"), "filter.name"),
    (lambda c: c["training"].__setitem__("binary_tier", "nope"), "training.binary_tier"),
    (lambda c: c["scoring"]["content_type_caps"]["fiction"]["condition"].__setitem__("dimension", "nope"),
     "content_type_caps.fiction.condition.dimension"),
])
def test_invalid_configs_are_rejected_with_the_field(tmp_path, change, field):
    folder = copy_filter(tmp_path)
    edit_config(folder, change)
    with pytest.raises(FilterConfigError) as err:
        load_filter(folder)
    where, _, message = str(err.value).partition("config.yaml: ")
    assert where == f"{folder}/" and field in message


def test_prompt_without_template_block(tmp_path):
    folder = copy_filter(tmp_path)
    (folder / "prompt.md").write_text("# a prompt\n\nJust prose, no heading.\n", encoding="utf-8")
    with pytest.raises(FilterConfigError) as err:
        load_filter(folder)
    assert str(folder / "prompt.md") in str(err.value) and "PROMPT TEMPLATE" in str(err.value)
    (folder / "prompt.md").write_text("# p\n\n## PROMPT TEMPLATE\n\nno fence here\n\n## Next\n```\n{text}\n```\n")
    with pytest.raises(FilterConfigError, match=r"prompt.md:3: .*no fenced"):
        load_filter(folder)


@pytest.mark.parametrize("body,message", [
    ("Score {text} on {nonsense}", "unknown placeholder"),
    ("Score the title {title} only", "never uses {text}"),
    ('Answer {"a": 1} for {text}', "unknown placeholder|not a str.format"),
    ("", "empty"),
])
def test_prompt_template_checks(body, message):
    with pytest.raises(FilterConfigError, match=message):
        parse_prompt(Path("p.md"), f"## PROMPT TEMPLATE\n\n```\n{body}\n```\n")


def test_prompt_template_renders_and_unclosed_fence():
    t = parse_prompt(Path("p.md"), "intro\n## PROMPT TEMPLATE\n```text\nT={title}\n{text}\nJSON {{\"a\": 1}}\n```\n")
    assert t.render(title="X", text="body") == 'T=X\nbody\nJSON {"a": 1}'
    with pytest.raises(FilterConfigError, match="never closed"):
        parse_prompt(Path("p.md"), "## PROMPT TEMPLATE\n```\n{text}\n")


def test_prefilter_errors_name_file_and_rule(tmp_path):
    folder = copy_filter(tmp_path)
    edit_config(folder, lambda p: p["rules"][4].__setitem__("patterns", ["(unclosed"]), file="prefilter.yaml")
    with pytest.raises(FilterConfigError) as err:
        load_filter(folder)
    assert "prefilter.yaml" in str(err.value) and "rules.4" in str(err.value)
    folder = copy_filter(tmp_path / "b", "deep_red_theme")
    edit_config(folder, lambda p: p["rules"][0].__setitem__("file", "theme/missing.json"), file="prefilter.yaml")
    with pytest.raises(FilterConfigError, match=r"prefilter.yaml: rules.0.file"):
        load_filter(folder)
    edit_config(folder, lambda p: p["rules"][0].__setitem__("file", "../../etc/passwd"), file="prefilter.yaml")
    with pytest.raises(FilterConfigError, match=r"'\.\.'"):
        load_filter(folder)


def test_discovery_finds_a_copied_version_and_skips_junk(tmp_path):
    copy_filter(tmp_path)
    assert [v.key for v in filter_versions(tmp_path)] == ["educational_value.v1"]
    copy_filter(tmp_path, as_version=2)
    (tmp_path / "educational_value" / "v3").mkdir()  # no config.yaml: not a version
    (tmp_path / "educational_value" / "draft").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "Bad Name" / "v1").mkdir(parents=True)
    (tmp_path / "Bad Name" / "v1" / "config.yaml").write_text("x: 1")
    versions = filter_versions(tmp_path)
    assert [v.key for v in versions] == ["educational_value.v1", "educational_value.v2"]
    assert load_filter(versions[1].folder).version == 2
    assert find_version("educational_value.v2", tmp_path).folder == versions[1].folder
    with pytest.raises(KeyError, match="known"):
        find_version("educational_value.v9", tmp_path)
    assert filter_versions(tmp_path / "absent") == []


def test_partition_keys_round_trip_and_pass_dagster_rules():
    import dagster as dg

    key = partition_key("deep_red_theme", 2)
    assert key == "deep_red_theme.v2" and parse_partition_key(key) == ("deep_red_theme", 2)
    dg.StaticPartitionsDefinition([key, partition_key("educational_value", 1)])  # accepted by Dagster
    for bad in ("deep_red_theme/v2", "deep_red_theme", "x.v", "X.v1", ""):
        with pytest.raises(ValueError):
            parse_partition_key(bad)


def test_filter_paths_follow_the_seed_layout(tmp_path, monkeypatch):
    p = FilterPaths.of("educational_value", 1, definitions=SHIPPED, outputs=tmp_path / "filters")
    out = tmp_path / "filters"
    assert p.config_file == SHIPPED / "educational_value" / "v1" / "config.yaml"
    assert p.model_dir == out / "educational_value" / "v1" / "model"
    assert p.training_history == out / "educational_value" / "v1" / "training_history.json"
    assert p.training_metadata == out / "educational_value" / "v1" / "training_metadata.json"
    assert p.report_docx == out / "reports" / "educational_value_v1_training_report.docx"
    assert p.plots_dir == out / "reports" / "educational_value_v1_plots"
    assert p.splits_dir == out / "datasets" / "educational_value_ground_truth_v1_splits"
    assert p.split_metadata == p.splits_dir / "split_metadata.json"
    assert p.split_file("val") == p.splits_dir / "val.jsonl"
    assert p.key == "educational_value.v1"
    # defaults: definitions from the checkout (or $DISTILLERY_FILTERS_DIR), outputs under the data dir
    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.delenv("DISTILLERY_FILTERS_DIR", raising=False)
    q = FilterPaths.for_key("deep_red_theme.v2")
    assert q.definition == filters_root() / "deep_red_theme" / "v2" and filters_root() == SHIPPED
    assert q.version_dir == (tmp_path / "d").resolve() / "filters" / "deep_red_theme" / "v2"
    monkeypatch.setenv("DISTILLERY_FILTERS_DIR", str(tmp_path / "defs"))
    assert filters_root() == (tmp_path / "defs").resolve()


def test_training_section_builds_the_trainers_config():
    from distillery_assets.filters.train import FilterTrainConfig

    for v in filter_versions(SHIPPED):
        t = load_filter(v.folder).config.training
        cfg = FilterTrainConfig(**t.trainer_fields())
        assert (cfg.mode, cfg.epochs, cfg.learning_rate, cfg.seed) == (t.mode, t.epochs, t.learning_rate, 42)


def test_training_options_may_not_shadow_fields(tmp_path):
    folder = copy_filter(tmp_path)
    edit_config(folder, lambda c: c["training"].__setitem__("options", {"epochs": 3}))
    with pytest.raises(FilterConfigError) as err:
        load_filter(folder)
    assert str(err.value).startswith(f"{folder / 'config.yaml'}: training: ") and "options: ['epochs']" in str(err.value)
