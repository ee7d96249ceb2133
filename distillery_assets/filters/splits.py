"""Train/val/test splits of a filter's ground truth: stratified by tier, 80/10/10, seed 42.

The rule is the platform's one split rule (:func:`distillery_assets.datasets.chatml.split`) applied twice,
stratified by tier both times: first ``holdout = ceil(n x (val + test))`` of each tier comes off (shuffled
with ``random.Random(seed)``), then the holdout is cut again into val and test, test taking
``ceil(holdout x test / (val + test))`` of each tier. For 80/10/10 the counts per tier are the seed's
(train ``int(0.8 n)``, val up to ``int(0.9 n)``, test the rest) for every tier size n >= 6 (checked for
6..200 in the tests); for 3 to 5 the seed's val is empty and this rule gives val one document from train.
A tier of one or two documents goes to the holdout. With three or more documents in all, every split
keeps at least one (taken from the largest split when stratification left one empty), so training
always has a validation set.

A split row is the seed's training record plus the tier and overall score::

    {"id", "title", "content", "url", "labels": [score per dimension, config order],
     "dimension_names": [...], "tier", "overall"}

:func:`write_splits` writes ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and ``split_metadata.json`` (the
seed's legacy fields: filter_name, filter_version, dimension_names, total_articles, train_articles,
val_articles, test_articles, train_ratio, val_ratio, test_ratio, seed; plus stratified_by, tiers per split,
rule and the sha256 of each file) into a temporary folder renamed onto the splits folder, so a reader
never sees a half-written set.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillery_assets.datasets.chatml import leaked, split
from distillery_assets.filters.config import FilterDefinition
from distillery_assets.io import read_jsonl
from distillery_assets.io.atomic import atomic_path
from distillery_assets.io.hashing import sha256_file

SPLITS = ("train", "val", "test")
RULE = ("per tier: random.Random(seed) shuffle, ceil(n*(val+test)) held out; the holdout cut again per tier, "
        "ceil(h*test/(val+test)) to test; at least one document per split when n >= 3")


class SplitError(ValueError):
    pass


def training_row(record: dict, dims: Sequence[str]) -> dict[str, Any]:
    return {"id": record["id"], "title": record.get("title") or "", "content": record.get("content") or "",
            "url": record.get("url") or "", "labels": [float(record["scores"][d]) for d in dims],
            "dimension_names": list(dims), "tier": record["tier"], "overall": record["overall"]}


def _rebalance(parts: dict[str, list]) -> None:
    for name in SPLITS:
        if not parts[name]:
            donor = max(SPLITS, key=lambda s: len(parts[s]))
            if len(parts[donor]) > 1:
                parts[name].append(parts[donor].pop())


def stratified_split(records: Sequence[dict], *, train_ratio: float = 0.8, val_ratio: float = 0.1,
                     seed: int = 42, key: str = "tier") -> dict[str, list[dict]]:
    """``{"train": [...], "val": [...], "test": [...]}`` (see the module docstring)."""
    if len(records) < 3:
        raise SplitError(f"need at least 3 labelled documents to make train/val/test, have {len(records)}")
    test_ratio = 1.0 - train_ratio - val_ratio
    if test_ratio <= 0:
        raise SplitError("train_ratio + val_ratio must leave a test share")
    strat = lambda r: r[key]  # noqa: E731
    train, holdout = split(records, seed=seed, valid_fraction=1.0 - train_ratio, allow_empty_side=True,
                           stratify_key=strat)
    val, test = (split(holdout, seed=seed, valid_fraction=test_ratio / (1.0 - train_ratio),
                       allow_empty_side=True, stratify_key=strat) if len(holdout) >= 1 else ([], []))
    parts = {"train": train, "val": val, "test": test}
    _rebalance(parts)
    ids = {name: [r["id"] for r in rows] for name, rows in parts.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = leaked(parts[a], parts[b], key=lambda r: r["id"])
        if both:
            raise SplitError(f"ids in both {a} and {b}: {sorted(both)[:5]}")
    assert sum(len(v) for v in ids.values()) == len(records)
    return parts


def write_splits(records: Sequence[dict], definition: FilterDefinition, out_dir: Path) -> dict[str, Any]:
    """Split ``records`` (ground-truth records with ``scores``, ``tier``, ``overall``) and write the folder;
    returns the metadata written to ``split_metadata.json``."""
    t = definition.config.training
    dims = definition.dimensions
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise SplitError(f"repeated ids in the ground truth: {dupes[:5]}")
    parts = stratified_split(records, train_ratio=t.train_ratio, val_ratio=t.val_ratio, seed=t.seed)
    test_ratio = round(1.0 - t.train_ratio - t.val_ratio, 6)
    meta: dict[str, Any] = {
        "filter_name": definition.name,
        "filter_version": definition.config.filter.version,
        "dimension_names": list(dims),
        "total_articles": len(records),
        "train_articles": len(parts["train"]),
        "val_articles": len(parts["val"]),
        "test_articles": len(parts["test"]),
        "train_ratio": t.train_ratio,
        "val_ratio": t.val_ratio,
        "test_ratio": test_ratio,
        "seed": t.seed,
        "stratified_by": "tier",
        "tiers": {name: dict(sorted(Counter(r["tier"] for r in rows).items())) for name, rows in parts.items()},
        "rule": RULE,
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        files = {}
        for name in SPLITS:
            path = tmp / f"{name}.jsonl"
            with open(path, "w", encoding="utf-8") as fh:
                for r in parts[name]:
                    fh.write(json.dumps(training_row(r, dims), ensure_ascii=False) + "\n")
            files[f"{name}.jsonl"] = sha256_file(path)
        meta["sha256"] = files
        (tmp / "split_metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    return meta


def read_split(path: Path) -> list[dict]:
    return read_jsonl(Path(path))
