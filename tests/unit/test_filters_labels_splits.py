"""Labels files (oracle: labels), oracle agreement, and the stratified 80/10/10 splits."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from scipy import stats

from distillery_assets.filters.config import load_filter
from distillery_assets.filters.labels import agreement, pearson, read_labels, spearman
from distillery_assets.filters.oracle import ground_truth_record
from distillery_assets.filters.splits import SplitError, stratified_split, write_splits
from tests.support.filters_defs import SHIPPED

EDU = SHIPPED / "educational_value" / "v1"


def _scores(v=5):
    return {d: v for d in load_filter(EDU).dimensions}


def test_labels_file_bad_lines_are_rejects_naming_file_line_field(tmp_path):
    d = load_filter(EDU)
    path = tmp_path / "labels.jsonl"
    lines = [
        json.dumps({"id": "a", "scores": _scores(7), "title": "A", "content": "alpha"}),
        '{"id": "b", "scores": {',                                                  # 2 malformed
        json.dumps({"id": "c", "scores": {**_scores(), "clarity": 12}}),             # 3 out of range
        json.dumps({"id": "d", **_scores(3), "content_type": "advertising", "content": "delta"}),  # 4 flat, ok
        json.dumps({"scores": _scores()}),                                           # 5 no id
        json.dumps({"id": "e", "scores": {k: v for k, v in _scores().items() if k != "coherence"}}),  # 6
        json.dumps({"id": "a", "scores": _scores()}),                                # 7 duplicate
        "",
        json.dumps({"id": "f", "educational_value_analysis": {"dimensions": {k: {"score": 6} for k in _scores()}}}),
        json.dumps({"id": "g", "scores": {**_scores(), "reliability": "n/a"}}),      # 10 not a number
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, rejects = read_labels(path, d, documents={"f": {"id": "f", "title": "F", "content": "from the docs"}})
    assert [r["id"] for r in records] == ["a", "d", "f"]
    got = {(r.reason, r.where) for r in rejects}
    assert got == {
        ("malformed_line", f"{path}:2"),
        ("score_out_of_range", f"{path}:3:scores.clarity"),
        ("missing_id", f"{path}:5:id"),
        ("missing_dimension", f"{path}:6:scores.coherence"),
        ("duplicate_id", f"{path}:7:id"),
        ("not_a_number", f"{path}:10:scores.reliability"),
    }
    a, dd, f = records
    assert a["overall"] == 7.0 and a["tier"] == "excellent" and a["content"] == "alpha"
    assert a["oracle"] == {"kind": "labels", "file": str(path), "line": 1}
    assert dd["applied"] == ["cap:advertising"] and dd["overall"] == 2.0
    assert f["content"] == "from the docs" and f["scores"]["clarity"] == 6.0


def test_agreement_per_dimension_matches_scipy():
    rng = random.Random(0)
    dims = ["x", "y", "z"]
    a = {str(i): {"x": rng.randint(0, 10), "y": rng.randint(0, 10), "z": 4} for i in range(40)}
    b = {k: {"x": v["x"] + rng.choice([-1, 0, 1]), "y": rng.randint(0, 10), "z": 4} for k, v in a.items()}
    b["extra"] = {"x": 1, "y": 1, "z": 1}
    out = agreement(a, b, dims)
    keys = sorted(a)
    xa, xb = [a[k]["x"] for k in keys], [b[k]["x"] for k in keys]
    assert out["n"] == 40 and out["only_b"] == 1 and out["only_a"] == 0
    assert out["dimensions"]["x"]["pearson"] == pytest.approx(stats.pearsonr(xa, xb)[0], abs=1e-4)
    assert out["dimensions"]["x"]["spearman"] == pytest.approx(stats.spearmanr(xa, xb)[0], abs=1e-4)
    assert out["dimensions"]["x"]["mae"] == pytest.approx(sum(abs(p - q) for p, q in zip(xa, xb)) / 40, abs=1e-4)
    assert out["dimensions"]["x"]["pearson"] > 0.8 > abs(out["dimensions"]["y"]["pearson"])
    assert out["dimensions"]["z"]["pearson"] is None and out["dimensions"]["z"]["mae"] == 0  # constant: undefined
    recs = [{"id": k, "scores": v} for k, v in a.items()]
    assert agreement(recs, recs, dims)["dimensions"]["x"]["pearson"] == 1.0
    assert pearson([1], [2]) is None and spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def _records(n_per_tier: dict[str, int]):
    d = load_filter(EDU)
    level = {"excellent": 9, "educational": 6, "some_value": 4, "not_educational": 1}
    out = []
    for tier, n in n_per_tier.items():
        for i in range(n):
            rec = ground_truth_record({"id": f"{tier}-{i}", "title": "t", "content": "c"}, _scores(level[tier]),
                                      d.config.scoring, content_type="other", oracle={"kind": "test"})
            assert rec["tier"] == tier
            out.append(rec)
    return d, out


def test_stratified_split_80_10_10_per_tier_deterministic():
    d, recs = _records({"excellent": 30, "educational": 50, "some_value": 10, "not_educational": 20})
    parts = stratified_split(recs, seed=42)
    for tier, n in (("excellent", 30), ("educational", 50), ("some_value", 10), ("not_educational", 20)):
        counts = {s: sum(r["tier"] == tier for r in parts[s]) for s in parts}
        assert counts == {"train": int(n * 0.8), "val": int(n * 0.9) - int(n * 0.8),
                          "test": n - int(n * 0.9)}, tier  # the seed's per-tier counts
    ids = [r["id"] for s in parts.values() for r in s]
    assert sorted(ids) == sorted(r["id"] for r in recs)
    again = stratified_split(list(reversed(recs))[::-1], seed=42)
    assert {s: [r["id"] for r in v] for s, v in again.items()} == {s: [r["id"] for r in v] for s, v in parts.items()}
    other = stratified_split(recs, seed=7)
    assert [r["id"] for r in other["train"]] != [r["id"] for r in parts["train"]]


def test_tiny_sets_keep_every_split_nonempty_and_too_small_raises():
    _, recs = _records({"excellent": 1, "educational": 1, "some_value": 1, "not_educational": 1})
    parts = stratified_split(recs)
    assert all(parts[s] for s in parts) and sum(map(len, parts.values())) == 4
    _, three = _records({"educational": 3})
    assert [len(three and stratified_split(three)[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    with pytest.raises(SplitError, match="at least 3"):
        stratified_split(three[:2])


def test_write_splits_files_and_legacy_metadata(tmp_path):
    d, recs = _records({"excellent": 10, "educational": 20, "not_educational": 10})
    out = tmp_path / "educational_value_ground_truth_v1_splits"
    meta = write_splits(recs, d, out)
    on_disk = json.loads((out / "split_metadata.json").read_text())
    assert on_disk == meta
    legacy = ["filter_name", "filter_version", "dimension_names", "total_articles", "train_articles",
              "val_articles", "test_articles", "train_ratio", "val_ratio", "test_ratio", "seed"]
    assert all(k in meta for k in legacy)
    assert (meta["filter_name"], meta["filter_version"], meta["seed"]) == ("educational_value", "1.0", 42)
    assert (meta["total_articles"], meta["train_articles"], meta["val_articles"], meta["test_articles"]) == (40, 32, 4, 4)
    assert (meta["train_ratio"], meta["val_ratio"], meta["test_ratio"]) == (0.8, 0.1, 0.1)
    rows = {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "val", "test")}
    assert [len(v) for v in rows.values()] == [32, 4, 4]
    row = rows["train"][0]
    assert row["dimension_names"] == d.dimensions and len(row["labels"]) == len(d.dimensions)
    assert set(row) == {"id", "title", "content", "url", "labels", "dimension_names", "tier", "overall"}
    assert Counter(r["tier"] for r in rows["test"]) == Counter(meta["tiers"]["test"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left behind
    # a failing write leaves the previous folder whole
    with pytest.raises(SplitError):
        write_splits(recs + recs[:1], d, out)
    assert json.loads((out / "split_metadata.json").read_text()) == meta


def test_per_tier_counts_equal_the_seeds_rule_from_six_documents():
    for n in range(3, 201):
        recs = [{"id": str(i), "tier": "t"} for i in range(n)]
        p = stratified_split(recs)
        got = (len(p["train"]), len(p["val"]), len(p["test"]))
        seed = (int(n * 0.8), int(n * 0.9) - int(n * 0.8), n - int(n * 0.9))
        assert got == seed if n >= 6 else got == (seed[0] - 1, 1, seed[2]), n


def test_labels_join_the_versions_documents_and_name_every_reject(tmp_path):
    """In a filter's ground truth a label must name a document the prefilter passed: one the prefilter blocked
    and one with no document are named rejects; a record never has empty content; the `labels` shape is taken
    and a missing dimension lists the accepted shapes."""
    d = load_filter(EDU)
    dims = d.dimensions
    path = tmp_path / "labels.jsonl"
    lines = [json.dumps({"id": "kept", "scores": _scores(6)}),
             json.dumps({"id": "blocked", "scores": _scores(6)}),
             json.dumps({"id": "nowhere", "scores": _scores(6)}),
             json.dumps({"id": "as_labels", "labels": _scores(4)}),
             json.dumps({"id": "empty", "scores": _scores(6)}),
             json.dumps({"id": "wrong", "ratings": _scores(6)})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs = {i: {"id": i, "title": "", "content": "some text" if i != "empty" else ""}
            for i in ("kept", "as_labels", "empty", "wrong")}
    records, rejects = read_labels(path, d, documents=docs, join=True, blocked={"blocked": "content_too_short"})
    assert [r["id"] for r in records] == ["kept", "as_labels"]
    assert all(r["content"].strip() for r in records) and records[1]["scores"][dims[0]] == 4.0
    by_key = {r.key: r for r in rejects}
    assert set(by_key) == {"blocked", "nowhere", "empty", "wrong"}
    assert by_key["blocked"].reason == "blocked_by_prefilter" and "content_too_short" in by_key["blocked"].detail
    assert by_key["nowhere"].reason == "no_document" and by_key["nowhere"].where == f"{path}:3:id"
    assert by_key["empty"].reason == "empty_content"
    wrong = by_key["wrong"]
    assert wrong.reason == "missing_dimension" and "accepted shapes" in wrong.detail
    assert '"labels": {' in wrong.detail and '"scores": {' in wrong.detail and dims[0] in wrong.detail
    # without join (a labels file read on its own) labels need no document, but still content
    alone, rejected = read_labels(path, d, documents=docs)
    assert {r["id"] for r in alone} == {"kept", "as_labels"}
    assert {r.reason for r in rejected} == {"empty_content", "missing_dimension"}


def test_prompt_is_optional_in_labels_mode_only(tmp_path):
    from distillery_assets.filters.config import FilterConfigError
    from distillery_assets.filters.oracle import OracleTask
    from tests.support.filters_defs import copy_filter, edit_config

    folder = copy_filter(tmp_path)
    (folder / "prompt.md").unlink()
    with pytest.raises(FilterConfigError, match="prompt.md: oracle prompt not found"):
        load_filter(folder)
    (folder / "labels.jsonl").write_text("")
    edit_config(folder, lambda c: c.__setitem__("oracle", {"mode": "labels", "labels": "labels.jsonl"}))
    d = load_filter(folder)
    assert d.prompt is None
    with pytest.raises(ValueError, match="prompt.md: not found"):
        OracleTask(d)
