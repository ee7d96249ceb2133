"""The one ChatML dataset module (``distillery_assets.datasets.chatml``) and the poetry/theme code on it.

Holds the former ``test_poetry_chatml.py`` and the theme split test of ``test_theme_generate.py``, every
assertion kept, plus tests of the shared split rule, leakage, validation, the split files and ``max_seq``.
"""

import json
import math
import shutil

import pytest
import yaml

from distillery_assets.datasets import chatml
from distillery_assets.io import atomic_write_jsonl, read_jsonl
from distillery_assets.io.hashing import sha256_file
from distillery_assets.paths import config_dir
from distillery_assets.poetry.datasets import check_role_split, split_path, task_examples, user_assistant
from distillery_assets.poetry.settings import DatasetSettings, PoetryConfig
from distillery_assets.training.config import PROFILE_ENV


def _ex(i, **meta):
    ex = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": f"u{i}"},
                       {"role": "assistant", "content": f"a{i}"}]}
    if meta:
        ex["metadata"] = meta
    return ex


# ---- from test_poetry_chatml.py ------------------------------------------------------------------------

def test_task_mappings_and_empty_turns_skipped():
    recs = [{"poem": {"text": "P"}, "critique": "C"}, {"poem": {"text": "P2"}, "critique": " "}]
    ex = task_examples("critique", recs, "SYS")
    assert ex == [{"messages": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "P"},
                                {"role": "assistant", "content": "C"}]}]
    u, a = user_assistant("comparison", {"poem_a": {"text": "A"}, "poem_b": {"text": "B"}, "comparison": "X"})
    assert u.startswith("Poem A:\n---\nA\n---") and "Poem B:\n---\nB" in u and a == "X"
    u, a = user_assistant("dialogue", {"poem": {"text": "P"}, "critique": "C", "revision": "R", "follow_up": "F"})
    assert "Their revision:\n---\nR\n---" in u and a == "F"
    assert user_assistant("poet_pair", {"brief": "B", "poem": "P"}) == ("B", "P")


def test_split_is_seeded_disjoint_and_sized():
    exs = [_ex(i) for i in range(30)]
    train, valid = chatml.split(exs, seed=42, valid_fraction=0.1)
    assert (len(train), len(valid)) == (27, 3)
    assert chatml.split(exs, seed=42) == (train, valid)
    assert chatml.split(exs, seed=7) != (train, valid)
    assert len(chatml.leaked(train, valid)) == 0
    t, v = chatml.split(exs, max_samples=10)
    assert (len(t), len(v)) == (10, 2)
    assert [len(x) for x in chatml.split(exs[:2])] == [1, 1]
    with pytest.raises(chatml.DatasetTooSmall):
        chatml.split(exs[:1])


def test_dedupe_and_checks():
    exs, removed = chatml.dedupe([_ex(1), _ex(1), _ex(2)])
    assert removed == 1 and len(exs) == 2
    bad = [_ex(1), _ex(1), {"messages": [{"role": "user", "content": "x"}] * 3},
           {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": ""},
                         {"role": "assistant", "content": "a"}]}, {"text": "no messages"}]
    rep = chatml.check_examples(bad, max_seq=10, count_tokens=lambda s: len(s), where="train.jsonl")
    assert rep.duplicates == 1 and not rep.ok
    assert "train.jsonl line 3: turn 0 must have role 'system'" in rep.problems
    assert "train.jsonl line 4: user turn is empty" in rep.problems
    assert "train.jsonl line 5: 'messages' must be a list of 3 turns" in rep.problems
    good = chatml.check_examples([_ex(1), _ex(22)], max_seq=18, count_tokens=len)
    assert good.ok and good.max_tokens == 19 and good.over_length == 1  # 1+3+3 content + 3x4 overhead


# ---- from test_theme_generate.py (theme splits) --------------------------------------------------------

def _theme_key(r):
    return r["metadata"]["chunk_id"], r["metadata"]["example_index"]


def test_split_ratio_seed_and_no_overlap():
    recs = [{"messages": [], "metadata": {"chunk_id": f"1-{i}", "example_index": 0}} for i in range(50)]
    train, val = chatml.split(recs, valid_fraction=1 - 0.9, seed=42)
    assert len(train) == 45 and len(val) == 5 and not chatml.leaked(train, val, key=_theme_key)
    assert chatml.split(recs, valid_fraction=1 - 0.9, seed=42) == (train, val)
    assert chatml.split(recs, valid_fraction=1 - 0.9, seed=7) != (train, val)
    with pytest.raises(ValueError):
        chatml.split(recs, valid_fraction=1 - 1.0)
    assert chatml.check_examples(train[:1], where="train", required_metadata=("chunk_id",)).problems
    assert not chatml.check_examples(
        [{"messages": [{"role": r, "content": "x"} for r in ("system", "user", "assistant")],
          "metadata": {"chunk_id": "1-1"}}], where="t", required_metadata=("chunk_id",)).problems


# ---- the shared rule -----------------------------------------------------------------------------------

def test_rule_gives_the_theme_count_everywhere_and_the_poetry_count_where_its_tests_look():
    for n in range(2, 400):
        theme_valid = n - int(n * 0.9)  # the former theme rule
        assert chatml.valid_count(n, 0.1) == theme_valid == math.ceil(n / 10), n
        assert chatml.valid_count(n, 1 - 0.9) == theme_valid, n
    for n, poetry_valid in ((2, 1), (30, 3), (39, 4)):  # the former poetry rule's asserted counts
        assert chatml.valid_count(n, 0.1) == poetry_valid
    assert chatml.valid_count(25, 0.1) == 3 and round(25 * 0.1) == 2  # where the two former rules differed
    assert chatml.valid_count(3, 0.9) == 2  # at least one example stays in train


def test_same_rule_whichever_way_the_ratio_is_given():
    exs = [_ex(i) for i in range(57)]
    assert chatml.split(exs, valid_fraction=0.1, seed=3) == chatml.split(exs, valid_fraction=1 - 0.9, seed=3)
    train, valid = chatml.split(exs, valid_fraction=0.25, seed=3)
    assert (len(train), len(valid)) == (42, 15)
    assert sorted(map(chatml.content_key, train + valid)) == sorted(map(chatml.content_key, exs))
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="valid fraction"):
            chatml.split(exs, valid_fraction=bad)


def test_allow_empty_side_keeps_tiny_runs_going():
    assert chatml.split([_ex(1)], allow_empty_side=True) == ([], [_ex(1)])
    assert chatml.split([], allow_empty_side=True) == ([], [])
    with pytest.raises(chatml.DatasetTooSmall, match="have 0"):
        chatml.split([])


def test_stratified_split_keeps_each_stratum_in_proportion():
    exs = [_ex(i, kind="a") for i in range(20)] + [_ex(100 + i, kind="b") for i in range(10)]
    key = lambda e: e["metadata"]["kind"]  # noqa: E731
    train, valid = chatml.split(exs, seed=5, stratify_key=key)
    assert sorted(key(e) for e in valid) == ["a", "a", "b"]
    assert sorted(key(e) for e in train).count("a") == 18
    assert chatml.split(exs, seed=5, stratify_key=key) == (train, valid)
    assert not chatml.leaked(train, valid)
    singles = [_ex(i, kind=str(i)) for i in range(3)]  # every stratum of one goes to valid
    with pytest.raises(chatml.DatasetTooSmall, match="each side needs at least one"):
        chatml.split(singles, stratify_key=key)


def test_leakage_by_content_or_by_a_named_key():
    train = [_ex(1, chunk_id="c1"), _ex(2, chunk_id="c2")]
    valid = [_ex(1, chunk_id="c9"), _ex(3, chunk_id="c2")]
    assert chatml.leaked(train, valid) == {chatml.content_key(_ex(1))}
    assert chatml.leaked(train, valid, key=lambda e: e["metadata"]["chunk_id"]) == {"c2"}
    # metadata is not part of an example's identity; every turn's role and content is
    assert chatml.content_key(_ex(1, a=1)) == chatml.content_key(_ex(1))
    other_system = _ex(1)
    other_system["messages"][0]["content"] = "T"
    assert chatml.content_key(other_system) != chatml.content_key(_ex(1))


def test_to_examples_with_metadata():
    recs = [{"q": "Q1", "a": "A1", "id": 1}, {"q": "Q2", "a": "", "id": 2}]
    out = chatml.to_examples(recs, lambda r: (r["q"], r["a"]), "SYS", metadata=lambda r: {"id": r["id"]})
    assert out == [chatml.example("SYS", "Q1", "A1", {"id": 1})]
    assert out[0]["metadata"] == {"id": 1} and [m["role"] for m in out[0]["messages"]] == list(chatml.ROLES)


# ---- files and checks ----------------------------------------------------------------------------------

def test_build_split_writes_both_files_and_their_metadata(tmp_path):
    exs = [_ex(i) for i in range(20)] + [_ex(3)]
    res = chatml.build_split(exs, train_path=tmp_path / "d" / "train.jsonl", valid_path=tmp_path / "d" / "valid.jsonl",
                             meta_path=tmp_path / "d" / "split.json", seed=9, valid_fraction=0.1)
    assert res.duplicates_removed == 1 and (len(res.train), len(res.valid)) == (18, 2)
    assert read_jsonl(res.train_path) == res.train and read_jsonl(res.valid_path) == res.valid
    assert (res.train, res.valid) == chatml.split(chatml.dedupe(exs)[0], seed=9, valid_fraction=0.1)
    info = json.loads(res.meta_path.read_text())
    assert info == res.info
    assert info["counts"] == {"input": 21, "duplicates_removed": 1, "train": 18, "valid": 2}
    assert (info["seed"], info["valid_fraction"], info["stratified"]) == (9, 0.1, False)
    assert info["files"]["train"] == {"path": "train.jsonl", "sha256": sha256_file(res.train_path)}
    assert info["files"]["valid"]["sha256"] == sha256_file(res.valid_path)
    assert not list((tmp_path / "d").glob(".*"))  # no temporary files left behind


def test_build_split_too_small_writes_nothing(tmp_path):
    with pytest.raises(chatml.DatasetTooSmall):
        chatml.build_split([_ex(1), _ex(1)], train_path=tmp_path / "t.jsonl", valid_path=tmp_path / "v.jsonl",
                           meta_path=tmp_path / "s.json")
    assert not list(tmp_path.iterdir())


def test_check_split_file_leakage_lengths_and_empty(tmp_path):
    train, valid, missing = tmp_path / "train.jsonl", tmp_path / "valid.jsonl", tmp_path / "none.jsonl"
    atomic_write_jsonl(train, [_ex(i, chunk_id=f"c{i}") for i in range(5)])
    atomic_write_jsonl(valid, [_ex(0, chunk_id="c0")])
    leaky = chatml.check_split_file(train, valid, max_seq=100, count_tokens=len)
    assert not leaky.passed and leaky.summary()["leaked_into_other_split"] == 1 and leaky.sibling_compared
    alone = chatml.check_split_file(train, missing, max_seq=100, count_tokens=len)
    assert alone.passed and not alone.sibling_compared
    # 1+2+2 content + 12 overhead = 17 tokens each: over max_seq 16 for all five
    too_long = chatml.check_split_file(train, missing, max_seq=16, count_tokens=len)
    assert too_long.summary()["over_max_seq"] == 5 and not too_long.passed
    lenient = chatml.check_split_file(train, missing, max_seq=16, count_tokens=len, max_over_length_fraction=1.0)
    assert lenient.passed and lenient.summary()["over_max_seq_fraction"] == 1.0
    atomic_write_jsonl(missing, [])
    assert not chatml.check_split_file(missing, max_seq=16).passed  # an empty split fails
    atomic_write_jsonl(valid, [_ex(9)])
    no_chunk = chatml.check_split_file(valid, required_metadata=("chunk_id",), max_seq=16)
    assert no_chunk.report.problems == ["valid.jsonl line 1: metadata.chunk_id missing"] and not no_chunk.passed


# ---- max_seq from the training profiles, one place -----------------------------------------------------

def test_max_seq_comes_from_the_training_profile(monkeypatch, tmp_path):
    monkeypatch.setenv(PROFILE_ENV, "full")
    assert (chatml.max_seq_for("educator"), chatml.max_seq_for("poet"), chatml.max_seq_for("theme")) == (1024, 512, 512)
    assert chatml.max_seq_for("educator", "cpu_small") == 256
    dest = tmp_path / "config"
    shutil.copytree(config_dir(), dest)
    path = dest / "training" / "poet.yaml"
    text = path.read_text()
    assert text.count("max_seq: 512") == 1
    path.write_text(text.replace("max_seq: 512", "max_seq: 640"))
    monkeypatch.setenv("DISTILLERY_CONFIG_DIR", str(dest))
    assert chatml.max_seq_for("poet") == 640


def test_poetry_settings_no_longer_carry_a_max_seq():
    assert not {"educator_max_seq", "poet_max_seq"} & set(DatasetSettings.model_fields)
    shipped = yaml.safe_load((config_dir() / "poetry" / "pipeline.yaml").read_text())["datasets"]
    assert not [k for k in shipped if "max_seq" in k]


def test_poetry_split_check_reads_the_role_max_seq(data_dir, monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "cpu_small")
    atomic_write_jsonl(split_path("poet", "train"), [_ex(i) for i in range(4)])
    atomic_write_jsonl(split_path("poet", "val"), [_ex(9)])
    verdict = check_role_split(PoetryConfig(), "poet", "train", count_tokens=len)
    assert verdict.passed and verdict.summary()["max_seq"] == 256 and verdict.sibling_compared
    monkeypatch.setenv(PROFILE_ENV, "full")
    assert check_role_split(PoetryConfig(), "poet", "val").summary()["max_seq"] == 512


# ---- the theme split asset and its checks on the shared module -----------------------------------------

def test_theme_split_asset_writes_both_sides_and_its_checks_pass(data_dir, tmp_path):
    import dagster as dg

    from assets import theme

    rows = [_ex(i, chunk_id=f"5-{i // 2}", example_index=i % 2, persona="p" + str(i % 3)) for i in range(23)]
    source = tmp_path / "theme_chatml.jsonl"
    atomic_write_jsonl(source, rows)

    @dg.asset(name="theme_chatml")
    def stub() -> dg.Output:
        return dg.Output(source)

    result = dg.materialize([stub, theme.theme_chatml_splits, theme.theme_chatml_train_well_formed,
                             theme.theme_chatml_val_well_formed])
    assert result.success
    folder = data_dir / "theme"
    train, val = read_jsonl(folder / "theme_chatml_train.jsonl"), read_jsonl(folder / "theme_chatml_val.jsonl")
    assert len(val) == len(rows) - int(len(rows) * 0.9) == 3 and len(train) == 20
    assert (train, val) == chatml.split(rows, valid_fraction=0.1, seed=42)
    info = json.loads((folder / "theme_chatml_split.json").read_text())
    assert info["counts"]["train"] == 20
    assert info["files"]["valid"]["sha256"] == sha256_file(folder / "theme_chatml_val.jsonl")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"theme_chatml_train_well_formed", "theme_chatml_val_well_formed"}
    assert all(e.passed for e in checks.values())
    meta = checks["theme_chatml_train_well_formed"].metadata
    assert meta["max_seq"].value == chatml.max_seq_for("theme") and meta["sibling_compared"].value is True


def test_embedded_token_counter_counts_and_prints_no_context_warning(capfd):
    count = chatml.embedded_token_counter()
    assert count("hello world") == 2 and count("") == 0
    assert count("a longer sentence, with punctuation.") > count("a longer sentence")
    printed = capfd.readouterr()
    assert "n_ctx_train" not in printed.err + printed.out  # the vocabulary-only load's context warning
