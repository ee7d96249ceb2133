"""What a Dagster user sees on the asset pages: every asset has kinds, owners, tags and a link to its code;
kinds follow the LLM provider and compute backend the definitions load with; and what is markdown (tables,
plots, previews) is stored as markdown, never as plain text that shows its markup, with charts that fit where
the page shows them without a click.

The metadata half materializes cheap assets in process (the poetry data half on a scripted LLM, the theme
chunks, ``filter_report`` and ``thyme_eval`` on fabricated training outputs: their page is what is judged,
not the training) and scans every value of every event.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from distillery_assets.paths import config_dir

INLINE_MD_LIMIT = 1000  # Dagster's UI shows a markdown entry in place only below this many characters
FENCE_MAX = 120  # characters a line of a code block may have before it runs off an asset page's metadata column


# ----------------------------------------------------------------------------------- the rendering rule

_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def unrendered(key: str, value) -> str | None:
    """Why ``value`` would not render as what it is on the asset page, or None when it would."""
    if isinstance(value, dg.MarkdownMetadataValue):
        md = value.md_str or ""
        for body in _FENCE.findall(md):  # markup inside a code block shows as raw characters
            if "**" in body or "![" in body or "|---" in body:
                return f"{key}: markdown markup inside a code block: {body[:80]!r}"
            widest = max((len(line) for line in body.splitlines()), default=0)
            if widest > FENCE_MAX:  # a code block does not wrap: the line runs off the column
                return f"{key}: a line of {widest} characters in a code block: {body[:60]!r}"
        if len(md) >= INLINE_MD_LIMIT and not key.endswith(FULL):  # shown only behind "[Show Markdown]"
            return f"{key}: {len(md):,} characters of markdown (shown only behind a click): {md[:60]!r}"
        return None
    if isinstance(value, dg.TableMetadataValue):
        for record in value.records:
            for column, cell in record.data.items():
                if isinstance(cell, str) and re.match(r"^\s*[\[{]['\"{]", cell):
                    return f"{key}: table cell {column} is a Python repr: {cell[:60]!r}"
        return None
    text = value.value if isinstance(value, dg.TextMetadataValue) else value if isinstance(value, str) else None
    if text is not None and (text.lstrip().startswith("![") or "|---" in text or "data:image/" in text):
        return f"{key}: markdown stored as plain text ({text[:60]!r})"
    return None


FULL = "_full"  # an entry so named is a full-size copy, behind a click on purpose, of one the page shows in place


def assert_rendered(metadata_by_asset: dict[str, dict]) -> None:
    problems = [f"{asset}: {why}" for asset, meta in metadata_by_asset.items()
                for key, value in meta.items() if (why := unrendered(key, value))]
    for asset, meta in metadata_by_asset.items():  # a *_full image only beside an image shown in place
        inline = [k for k, v in meta.items() if isinstance(v, dg.MarkdownMetadataValue)
                  and "![" in v.value and len(v.value) < INLINE_MD_LIMIT]
        problems += [f"{asset}: {k} has no copy shown in place" for k in meta if k.endswith(FULL) and not inline]
        if "size" in meta and "bytes" in meta:
            problems.append(f"{asset}: bytes ({meta['bytes'].value}) beside size ({meta['size'].value}): one unit")
    assert not problems, "\n".join(problems)


def _materializations(result) -> dict[str, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = mat.metadata
    for event in result.get_asset_check_evaluations():
        out[f"check {event.check_name}"] = event.metadata
    return out


def test_the_rule_itself():
    image = "![plot](data:image/png;base64,iVBOR)"
    assert unrendered("p", dg.MetadataValue.text(image)) and unrendered("p", image)
    assert unrendered("t", "| a | b |\n|---|---|\n| 1 | 2 |")
    assert unrendered("s", dg.MetadataValue.md("```text\n**thyme**\n- _prompt_ …\n```"))
    assert unrendered("c", dg.MetadataValue.table([dg.TableRecord({"scores": "{'a': 1}"})],
                                                  dg.TableSchema([dg.TableColumn("scores")])))
    assert unrendered("p", dg.MetadataValue.md(image)) is None
    assert unrendered("files", dg.MetadataValue.md("| a |\n|---|\n" + "| x |\n" * 200))  # behind a click
    assert unrendered("poem", dg.MetadataValue.md("```text\nroses\nare red\n```")) is None
    assert unrendered("critique", dg.MetadataValue.md("```text\n" + "a long line of prose " * 10 + "\n```"))


def test_text_keeps_its_line_breaks_and_prose_wraps():
    from markdown_it import MarkdownIt

    from distillery_assets.markdown import FENCE_WIDTH, text_block

    verse = "Snow on the sill,\nthe kettle ticking,"
    assert text_block(verse) == f"```text\n{verse}\n```"  # short lines: a block, as written
    prose = ("The poem has a timeless *beauty*, but the close could be more evocative; " * 2 +
             "\n- the second stanza\n2. the turn\n   indented\n\n# not a heading")
    md = text_block(prose)
    assert "```" not in md and max(map(len, prose.splitlines())) > FENCE_WIDTH
    html = MarkdownIt("commonmark").render(md)
    assert html.count("<br />") == 3 and html.count("<p>") == 2  # line breaks kept, the blank line a paragraph
    for markup in ("<em>", "<li>", "<ol", "<h1>"):
        assert markup not in html, markup  # renders as written
    assert "*beauty*" in html and "- the second stanza" in html and "2. the turn" in html and "# not a heading" in html
    assert "&nbsp;&nbsp;&nbsp;indented" in md


# ------------------------------------------------------------------------- kinds, owners, tags, code links

def _specs(defs: dg.Definitions):
    for assets_def in defs.assets or []:
        for key in assets_def.keys:
            yield assets_def, assets_def.specs_by_key[key]


def test_every_asset_has_kinds_owners_tags_a_description_and_a_link_to_its_code():
    from dagster._core.definitions.metadata.source_code import LocalFileCodeReference, UrlCodeReference

    from distillery_assets.definitions import defs

    problems, seen = [], 0
    for _, spec in _specs(defs):
        seen += 1
        name = spec.key.to_user_string()
        if not spec.kinds:
            problems.append(f"{name}: no kind")
        if not spec.owners:
            problems.append(f"{name}: no owner")
        if not spec.description:
            problems.append(f"{name}: no description")
        missing = {"pipeline", "seed", "compute"} - set(spec.tags)
        if missing:
            problems.append(f"{name}: no tag {sorted(missing)}")
        elif spec.tags["compute"] not in ("local", "modal", "provider"):
            problems.append(f"{name}: compute tag {spec.tags['compute']!r}")
        problems += [f"{name}: definition {why}" for key, value in spec.metadata.items()
                     if (why := unrendered(key, value))]
        refs = spec.metadata.get("dagster/code_references")
        if refs is None or not refs.code_references:
            problems.append(f"{name}: no code reference")
            continue
        for ref in refs.code_references:
            if isinstance(ref, LocalFileCodeReference):
                path = Path(ref.file_path)
                line = path.read_text(encoding="utf-8").splitlines()[ref.line_number - 1] \
                    if path.is_file() and ref.line_number else ""
                if not line.strip().startswith(("@", "def ")):  # the asset function (or its decorator)
                    problems.append(f"{name}: code reference {ref.file_path}:{ref.line_number} is not a function")
            elif not isinstance(ref, UrlCodeReference):
                problems.append(f"{name}: code reference {ref!r}")
    graph = defs.resolve_asset_graph()
    checks = list(graph.asset_check_keys)
    problems += [f"check {k.to_user_string()}: no description" for k in checks if not graph.get_check_spec(k).description]
    assert seen >= 48 and len(checks) >= 40
    assert not problems, "\n".join(problems)


def test_kinds_and_compute_follow_the_llm_provider_and_the_backend(monkeypatch):
    from assets import filters, thyme
    from assets.presentation import presented

    def spec(defs, name):
        return next(s for _, s in _specs(defs) if s.key.to_user_string() == name)

    monkeypatch.delenv("DISTILLERY_LLM_PROVIDER", raising=False)
    monkeypatch.delenv("DISTILLERY_COMPUTE_BACKEND", raising=False)
    local = presented(filters.defs)
    gt = spec(local, "filter_ground_truth")
    assert "llamacpp" in gt.kinds and "openai" not in gt.kinds  # the local model ran, not OpenAI
    assert (gt.tags["compute"], gt.tags["llm"]) == ("local", "local")
    assert spec(local, "filter_model").tags["compute"] == "local"

    monkeypatch.setenv("DISTILLERY_LLM_PROVIDER", "openai")
    monkeypatch.setenv("DISTILLERY_COMPUTE_BACKEND", "modal")
    remote = presented(filters.defs)
    gt = spec(remote, "filter_ground_truth")
    assert "openai" in gt.kinds and "llamacpp" not in gt.kinds and gt.tags["compute"] == "provider"
    model = spec(presented(thyme.defs), "thyme_model")
    assert "modal" in model.kinds and model.tags["compute"] == "modal"
    assert spec(remote, "filter_report").tags["compute"] == "local"  # draws plots here whatever the backends


def test_code_references_become_repository_links_when_a_git_url_is_set(monkeypatch):
    from assets import thyme
    from assets.presentation import presented

    monkeypatch.setenv("DISTILLERY_GIT_URL", "https://github.com/example/distillery")
    defs = presented(thyme.defs)
    urls = {s.key.to_user_string(): s.metadata["dagster/code_references"].code_references[0].url
            for _, s in _specs(defs)}
    assert re.fullmatch(r"https://github.com/example/distillery/tree/main/assets/thyme.py#L\d+", urls["thyme_eval"])


# ------------------------------------------------------------------------------------------------ plots

def test_a_chart_has_title_axis_labels_and_legend_and_fits_in_place():
    from distillery_assets.plots import GREY, Chart, Series, chart_md, chart_svg

    epochs = list(range(1, 21))
    chart = Chart("MAE per epoch", "epoch", "MAE", [Series("train", [3 / e for e in epochs], x=epochs),
                                                    Series("validation", [2 / e + 0.3 for e in epochs], x=epochs),
                                                    Series("mean predictor", [1.1], style="hline", colour=GREY)])
    svg = chart_svg(chart)
    for text in ("MAE per epoch", "epoch (1 to 20)", ">MAE<", ">train<", ">validation<", ">-- mean predictor<"):
        assert text in svg, text
    md = chart_md(chart)
    assert md.startswith("![MAE per epoch](<data:image/svg+xml,") and len(md) < INLINE_MD_LIMIT
    dims = [f"dimension_{i}" for i in range(8)]
    bars = chart_md(Chart("Validation MAE per dimension", "validation MAE", "dimension",
                          [Series("MAE", [0.1 * i for i in range(8)], style="bar")], xticklabels=dims, horizontal=True))
    assert "svg+xml" in bars and len(bars) < INLINE_MD_LIMIT and all(d in bars for d in dims)


# --------------------------------------------------------------------------------- metadata, materialized

@pytest.fixture
def poetry_volumes(tmp_path, monkeypatch):
    from tests.unit.test_poetry_assets import VOLUMES

    dest = tmp_path / "config"
    shutil.copytree(config_dir(), dest)
    pipeline = dest / "poetry" / "pipeline.yaml"
    cfg = yaml.safe_load(pipeline.read_text())
    cfg["profiles"]["small"].update(VOLUMES)
    pipeline.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DISTILLERY_CONFIG_DIR", str(dest))
    monkeypatch.delenv("DISTILLERY_POETRY_PROFILE", raising=False)


def test_poetry_data_half_pages_render(data_dir, poetry_volumes):
    from assets import poetry
    from tests.unit.test_poetry_assets import DATA_ASSETS, scripted_poetry_llm

    result = dg.materialize(DATA_ASSETS + poetry.GATE_CHECKS + poetry.DATASET_CHECKS,
                            resources={"llm": scripted_poetry_llm()})
    assert result.success
    pages = _materializations(result)
    assert_rendered(pages)
    critiques = pages["poetry_critiques"]
    assert critiques["cost_note"].value == "(local model: no charge)"
    assert len(critiques["preview"].value) < INLINE_MD_LIMIT
    assert critiques["dagster/row_count"].value == critiques["records"].value
    columns = [c.name for c in critiques["records_preview"].schema.columns]
    assert columns[-2:] == ["field", "text"] and len(columns) <= 5  # long texts in one wide column, a row each
    assert len(pages["educator_train"]["preview"].value) < INLINE_MD_LIMIT


def test_an_empty_task_is_marked_on_its_own_page(data_dir, poetry_volumes, monkeypatch):
    from assets import poetry
    from distillery_assets.poetry import generate
    from tests.unit.test_poetry_assets import scripted_poetry_llm

    real = generate.comparisons

    def nothing(cfg, client, good, bad):
        out = real(cfg, client, good, bad)
        out.records.clear()
        return out

    monkeypatch.setattr(generate, "comparisons", nothing)
    result = dg.materialize([poetry.poetry_good_poems, poetry.poetry_bad_poems, poetry.poetry_comparisons],
                            resources={"llm": scripted_poetry_llm()})
    page = _materializations(result)["poetry_comparisons"]
    assert page["dagster/row_count"].value == 0 and page["status"].value.startswith("EMPTY")
    assert list(page)[0] == "status"


def test_theme_pages_render(data_dir):
    from assets import theme
    from io_managers.files import DistilleryIOManager
    from resources.catalog import CatalogResource

    catalog = CatalogResource()
    result = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks, theme.theme_chunks],
                            resources={"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)},
                            run_config={"ops": {"gutenberg_books": {"config": {"ids": [61, 33870]}}}})
    assert result.success
    pages = _materializations(result)
    assert_rendered(pages)
    assert "svg+xml" in pages["theme_chunks"]["histogram_plot"].value


FILTER = "deep_red_theme.v1"


def _fake_filter_outputs(monkeypatch):
    """A trained version's files as filter_model leaves them (history, metadata, test results, model folder),
    with the report's one slow part, timing the scorer, replaced by a number."""
    from distillery_assets.filters import pipeline
    from distillery_assets.filters.config import load_filter
    from distillery_assets.filters.metrics import judge, weighted_overall
    from distillery_assets.filters.paths import FilterPaths

    paths = FilterPaths.for_key(FILTER)
    defn = load_filter(paths.definition)
    dims = defn.dimensions
    rng = np.random.default_rng(0)
    history = [{"epoch": e, **{split: {"loss": 4 / e + 0.5, "mae": 2 / e + 0.4, "rmse": 2.5 / e + 0.5,
                                       **{f"{d}_mae": 1.5 / e + 0.1 * i for i, d in enumerate(dims)}}
                               for split in ("train", "val")}} for e in range(1, 21)]
    target = rng.integers(0, 10, size=(12, len(dims))).astype(float)
    overall = weighted_overall([defn.config.scoring.dimensions[d].weight for d in dims], dims)
    tiers = [(n, float(t.threshold)) for n, t in defn.config.scoring.tiers_descending()]
    table = {name: judge(target + rng.normal(0, noise, target.shape), target, dims, overall=overall, tiers=tiers)
             for name, noise in (("model", 0.5), ("mean", 2.0), ("ridge", 1.0))}
    paths.model_dir.mkdir(parents=True)
    (paths.model_dir / "head.safetensors").write_bytes(b"0" * 10)
    paths.training_history.write_text(json.dumps(history))
    paths.training_metadata.write_text(json.dumps({"filter_name": defn.name, "epochs": 20}))
    paths.test_results.write_text(json.dumps({"results": table}))
    monkeypatch.setattr(pipeline, "scorer_speed", lambda paths: 120.0)
    monkeypatch.setattr(pipeline, "report_inputs", lambda *a, **k: _report_inputs(defn, paths, *a, **k))
    from types import SimpleNamespace as NS

    kept = NS(name="frozen_head", kept=True, history=history, val_mae=0.9)
    train = NS(test_examples=12, mean_val_mae=1.1, candidates=[kept, NS(name="ridge", kept=False, history=[], val_mae=1.0)],
               test_predictions=NS(target=target.tolist(), predictions={"model": (target + 0.5).tolist()}))
    monkeypatch.setattr(pipeline, "train_result", lambda paths: train)
    return paths


def _report_inputs(defn, paths, _defn, _paths, **kw):
    from distillery_assets.filters.report import ReportInputs

    return ReportInputs(filter_name=defn.name, filter_version="1.0", description="test", dims=[], tiers=[],
                        history=kw["history"], metadata=kw["metadata"], results=kw["table"],
                        plots_dir=paths.plots_dir, costs=kw["costs"])


def test_filter_report_page_renders_its_plots_and_checks_its_files(data_dir, monkeypatch):
    from assets import filters
    from resources.catalog import CatalogResource

    _fake_filter_outputs(monkeypatch)
    result = dg.materialize([filters.filter_report], partition_key=FILTER, resources={"catalog": CatalogResource()},
                            raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    pages = _materializations(result)
    assert_rendered(pages)
    page = pages["filter_report"]
    for key in ("mae_curves", "loss_curves", "per_dimension_val_mae"):
        assert isinstance(page[key], dg.MarkdownMetadataValue), key
        assert "svg+xml" in page[key].value and len(page[key].value) < INLINE_MD_LIMIT, key
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "report_files_present" and check.passed


THYME = "books-cpu"


def _fake_thyme_outputs(monkeypatch):
    """An experiment's trained models (model.json, history) and an evaluation (eval.json, samples, plot) in
    place of training and scoring them."""
    import assets.thyme as thyme_assets
    from distillery_assets.paths import data_dir
    from distillery_assets.thyme.experiments import load_experiment
    from distillery_assets.thyme.report import EvalReport, curves_png

    exp = load_experiment(THYME)
    root = data_dir() / "thyme" / THYME
    (root / "dataset").mkdir(parents=True)
    histories = {}
    for i, key in enumerate(exp.models):
        folder = root / "models" / key
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps({"fingerprint": key, "architecture": key}))
        histories[key] = {"steps": [{"step": s, "loss": 6 - s / 100} for s in range(0, 400, 50)],
                          "epochs": [{"epoch": e, "steps": 100 * e, "val_loss": 5 - e / 2, "val_ppl": 150 / e - 10 * i}
                                     for e in range(1, 5)]}
        (folder / "training_history.json").write_text(json.dumps(histories[key]))
    rows = [{"model": "unigram", "kind": "baseline", "seed_ppl": 400.0, "ppl": 420.0, "bpb": 2.1, "ood_bpb": 2.3,
             "scored_tokens": 25_000},
            {"model": "3-gram", "kind": "baseline", "seed_ppl": 200.0, "ppl": 210.0, "bpb": 1.8, "ood_bpb": 2.4,
             "scored_tokens": 25_000}]
    rows += [{"model": key, "kind": key, "seed_ppl": 60.0, "ppl": 70.0 + i, "bpb": 1.4, "ood_bpb": 1.9,
              "scored_tokens": 25_000, "parameters": 1_000_000} for i, key in enumerate(exp.models)]
    samples = {key: [{"prompt": "Call me Ishmael", "continuation": "and the * sea _ was | wide"}] for key in exp.models}

    def evaluate(exp_, dataset, models, ood, out):
        out.mkdir(parents=True)
        (out / "curves.png").write_bytes(curves_png(histories, rows))
        (out / "samples.json").write_text(json.dumps(samples))
        data = {"rows": rows, "val": {"chunks": 40, "tokens": 25_000}, "ood": {"book": "pg2434.txt"},
                "seed_ppl_per_epoch": {k: [None] for k in exp.models}, "seed_reported_ppl": 57.1}
        (out / "eval.json").write_text(json.dumps(data))
        return EvalReport(out, data, reused=True)

    monkeypatch.setattr(thyme_assets, "open_dataset", lambda folder: None)
    monkeypatch.setattr(thyme_assets, "evaluate_experiment", evaluate)


def test_thyme_eval_page_renders_samples_curves_and_checks(data_dir, monkeypatch):
    from assets import thyme
    from resources.catalog import CatalogResource

    _fake_thyme_outputs(monkeypatch)
    result = dg.materialize([thyme.thyme_eval], partition_key=THYME, resources={"catalog": CatalogResource()},
                            raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    pages = _materializations(result)
    assert_rendered(pages)
    page = pages["thyme_eval"]
    assert "```" not in page["samples"].value and r"\*" in page["samples"].value  # markdown, its markup escaped
    assert "svg+xml" in page["curves"].value and len(page["curves"].value) < INLINE_MD_LIMIT
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"below_unigram_baseline": True, "eval_on_enough_tokens": True}


# ------------------------------------------------------------------------------ checks from the results

def test_thyme_checks_flag_a_model_no_better_than_unigram_and_a_short_eval():
    from assets.thyme import _eval_checks

    rows = [{"model": "unigram", "kind": "baseline", "ppl": 100.0, "scored_tokens": 900},
            {"model": "thyme", "kind": "thyme", "ppl": 130.0, "scored_tokens": 900}]
    below, tokens = _eval_checks(rows, {"chunks": 2})
    assert not below.passed and below.severity == dg.AssetCheckSeverity.ERROR
    assert not tokens.passed and tokens.severity == dg.AssetCheckSeverity.WARN


def test_thyme_training_finished_check_reads_the_results():
    from assets.thyme import _finished_check
    from distillery_assets.thyme.experiments import load_experiment

    exp = load_experiment(THYME)
    t = exp.training_for(next(iter(exp.models)))
    result = type("R", (), {"steps": 10, "best_val_loss": 3.2, "epochs": [{}] * t.epochs, "stopped_early": None})
    short = type("R", (), {"steps": 10, "best_val_loss": 3.2, "epochs": [{}], "stopped_early": None})
    assert _finished_check(exp, {k: result for k in exp.models}).passed
    assert t.epochs == 1 or not _finished_check(exp, {k: short for k in exp.models}).passed


def test_filter_checks_from_the_results_in_hand():
    from assets.filters import _baselines_check, _pass_rate_check

    worse = {"model": {"mae": 2.0, "tier_accuracy": 0.25, "binary": {"threshold": 5, "precision": 0, "recall": 0,
                                                                      "f1": 0.0, "n": 8, "positives": 2}},
             "mean": {"mae": 1.5}, "ridge": {"mae": 1.2}}
    check = _baselines_check(worse)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    better = {**worse, "model": {**worse["model"], "mae": 1.3}}
    assert _baselines_check(better).severity == dg.AssetCheckSeverity.WARN and not _baselines_check(better).passed
    summary = {"pass_rate": 0.6, "expected_pass_rate": 0.94, "total": 100, "passed": 60}
    assert not _pass_rate_check(summary, 0.1).passed and _pass_rate_check({**summary, "pass_rate": 0.9}, 0.1).passed


def test_base_model_checks_count_parameters_from_config_loaded_model_and_weights(tmp_path):
    from safetensors.numpy import save_file

    from assets.finetune import _base_checks

    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 10, "hidden_size": 4,
           "intermediate_size": 6, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
           "head_dim": 2, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    tensors = {"embed": np.zeros((10, 4), np.float32), "q": np.zeros((4, 4), np.float32),
               "k": np.zeros((2, 4), np.float32), "v": np.zeros((2, 4), np.float32), "o": np.zeros((4, 4), np.float32),
               "mlp": np.zeros((3, 6, 4), np.float32), "norms": np.zeros((3, 4), np.float32)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    expected = sum(t.size for t in tensors.values())
    loads, params = _base_checks(tmp_path, {"parameters": expected})
    assert loads.passed and params.passed, (loads.metadata, params.metadata)
    assert not _base_checks(tmp_path, {"parameters": expected + 1})[1].passed
    (tmp_path / "tokenizer.json").unlink()
    assert not _base_checks(tmp_path, {"parameters": expected})[0].passed


# --------------------------------------------------------------------------------------------- units

def test_sizes_and_cost_read_in_the_right_unit():
    from assets.meta import llm_usage_meta
    from distillery_assets.markdown import human_size

    assert [human_size(n) for n in (812, 4_200, 105_300_000)] == ["812 B", "4.20 KB", "105.3 MB"]
    assert llm_usage_meta({"requests": 3}, "local")["cost_note"] == "(local model: no charge)"
    note = llm_usage_meta({"requests": 3, "cost_usd": 0.01, "cost_unknown_for": 1}, "openai")["cost_note"]
    assert "openai" in note and "1 request(s) unpriced" in note


def test_counts_in_tables_read_with_separators_labels_keep_their_digits():
    from distillery_assets.markdown import fit_md_table, md_table

    row = md_table([(33870, 1851, 12345, 3, 1200, 7)], ["id", "year", "chars", "best epoch", "steps", "seed"])
    assert row.splitlines()[-1] == "| 33870 | 1851 | 12,345 | 3 | 1,200 | 7 |"
    rows = [(f"encyclopedia/arts/leaf_{i}/prompts.txt", 5 * i) for i in range(200)]
    md = fit_md_table(rows, ["path", "prompts"], more=lambda n: f"… and {n:,} more in the folder")
    shown = md.count("/prompts.txt")
    assert len(md) < INLINE_MD_LIMIT and 10 < shown < 200 and md.endswith(f"… and {200 - shown:,} more in the folder")
    assert fit_md_table(rows[:3], ["path", "prompts"]).count("/prompts.txt") == 3  # all of a short table, no tail


def test_lists_and_rendered_texts_fit_in_place():
    from distillery_assets.markdown import bullets_md, fit_md

    reasons = [f"`critique/{i}`: cut off at max_tokens after a long answer about the poem" for i in range(40)]
    md = bullets_md(reasons, more=lambda n: f"… and {n} more in `reject_log`")
    shown = md.count("\n- ") + 1
    assert len(md) < INLINE_MD_LIMIT and 5 < shown < 40 and md.endswith(f"… and {40 - shown} more in `reject_log`")
    clipped = bullets_md(["`a`: " + "why " * 100, "`b`: short"], item_chars=60)
    first = clipped.splitlines()[0]
    assert first.startswith("- `a`: why") and first.endswith("…") and len(first) == 2 + 60 and "- `b`: short" in clipped
    assert fit_md(lambda n: "x" * n, (5000, 2000, 900, 100)) == "x" * 900
    assert fit_md(lambda n: "x" * n, (5000, 2000)) == "x" * 2000  # none fits: the smallest


def test_file_metadata_has_one_size_and_a_files_table_shown_in_place(data_dir):
    from distillery_assets.catalog import ArtifactRecord, Catalog
    from io_managers.register import record_metadata

    catalog = Catalog()
    records = [ArtifactRecord(i, "story_corpus", "fables", f"corpus/stories/fables/story_{i:03d}.corpus", "file",
                              "ab" * 32, 4_200 + i, 1, None) for i in range(120)]
    meta = record_metadata(records, catalog)
    assert "bytes" not in meta and meta["size"] == "511.1 KB" and meta["files"] == 120
    table = meta["files_table"].value
    assert len(table) < INLINE_MD_LIMIT and "| story_000.corpus | 4.20 KB |" in table  # names, not paths
    assert table.startswith("in `corpus/stories/fables/`\n\n| file | size | records |")
    assert "more: every file with its sha256 in `python -m distillery_assets.catalog artifacts story_corpus`" in table
    one = record_metadata(records[:1], catalog)
    assert "bytes" not in one and one["size"] == "4.20 KB"


def test_records_table_spells_out_dicts_and_keeps_line_breaks_visible():
    from assets.meta import records_table

    table = records_table([{"id": "a", "scores": {"x": 3, "y": 5.25}, "poem": "roses are red\nviolets blue"}],
                          ["id", "scores", "poem"])
    row = table.records[0].data
    assert row["scores"] == "x 3, y 5.25" and row["poem"] == "roses are red / violets blue"
    counts = records_table([{"id": 20231, "words": 1234, "by": {"length": 1500}}], ["id", "words", "by"]).records[0]
    assert counts.data == {"id": "20231", "words": "1,234", "by": "length 1,500"}
    long = records_table([{"id": "a", "poem": "p", "critique": "c"}], ["id"], long=["poem", "critique"])
    assert [r.data for r in long.records] == [{"id": "a", "field": "poem", "text": "p"},
                                              {"id": "a", "field": "critique", "text": "c"}]


def test_a_single_run_range_gives_each_partition_its_own_counts(data_dir):
    from assets import corpus
    from tests.unit.test_corpus_assets import run

    result = run([corpus.encyclopedia_prompts], start="arts", end="geography")
    assert result.success
    events = {e.partition: e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(events) == {"arts", "geography"}
    for key, meta in events.items():
        assert meta["prompts_files"].value == 20 and meta["prompts"].value == 100, key  # this partition's own
        assert meta["run_partitions"].value == 2 and meta["run_prompts"].value == 200  # and the run's totals
        assert meta["folder"].value.endswith(f"encyclopedia/{key}")  # the full list one click away
        assert meta["files"].value.count("| 5 | yes |") == 20  # all 20 leaf folders fit in place
        assert meta["preview_file"].value.endswith("prompts.txt") and ".corpus" in meta["preview"].value
    assert_rendered(events)  # files and preview shown in place (under 1,000 characters)
