"""The poetry dataset step: an example longer than the role's training max_seq is a reject, not a split row."""

import json

from distillery_assets.datasets import chatml
from distillery_assets.io import read_jsonl
from distillery_assets.poetry.datasets import build_role_dataset, example_tokens
from distillery_assets.poetry.settings import PoetryConfig

POEM = "Frost on the gate,\nthe latch gone stiff,\na robin weighs the wire\nand lets it go."


def _pairs(path, n_short, long_words):
    rows = [{"id": f"p{i}", "brief": f"A brief about frost, number {i}.", "poem": POEM} for i in range(n_short)]
    rows.append({"id": "long", "brief": "frost " * long_words, "poem": POEM})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def words(text):
    return len(text.split())


def test_an_example_over_max_seq_is_rejected_too_long_and_counted(data_dir, tmp_path):
    max_seq = chatml.max_seq_for("poet")
    cfg = PoetryConfig()
    ds = build_role_dataset(cfg, "poet", {"poet_pair": _pairs(tmp_path / "pairs.jsonl", 12, max_seq + 10)},
                            count_tokens=words)
    kept = ds.train + ds.valid
    assert len(kept) == 12 and all(example_tokens(e, words) <= max_seq for e in kept)
    assert ds.per_task["poet_pair"] == {"records": 13, "passed": 12, "rejected": 1}
    assert ds.reject_reasons == {"too_long": 1}
    (reject,) = read_jsonl(ds.reject_path)
    assert reject["id"] == "long" and reject["_reject_reasons"][0].startswith("too_long: ")
    assert f"> max_seq {max_seq}" in reject["_reject_reasons"][0]


def test_without_a_token_counter_nothing_is_dropped_for_length(data_dir, tmp_path):
    ds = build_role_dataset(PoetryConfig(), "poet", {"poet_pair": _pairs(tmp_path / "pairs.jsonl", 12, 2000)})
    assert len(ds.train) + len(ds.valid) == 13 and ds.reject_reasons == {}
