"""Filter training recipe on the shipped labels sample (data/filters/passage_voice/v1): every candidate head in
one table, and what a full fine-tuning epoch costs with and without a second encoding pass for train metrics.

1. ``--candidates`` (default: the version's own config, i.e. the default recipe): the sample through the
   filter's steps as the assets run them (candidates -> prefilter -> labels joined to documents -> stratified
   splits -> the training step), then the candidate table (validation MAE chose the kept one; test MAE against
   the mean predictor and ridge) as markdown.
2. ``--epoch-timing N``: one ``full_finetune`` epoch on the first N training passages, timed in the same
   process: the epoch as the trainer runs it now (one training pass, train metrics from it, then validation),
   and the pass the trainer used to add for train metrics (the whole training split encoded again in eval
   mode). Before = now + that pass; each figure is the mean of ``--repeat`` runs (CPU seconds of this process,
   and wall seconds).

    python benchmarks/filter_candidates.py [--candidates ridge mlp full_finetune] [--threads 2]
    python benchmarks/filter_candidates.py --epoch-timing 64 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sample_splits(root: Path):
    """The sample's definition, paths and splits under the data folder ``root`` (the assets' own steps)."""
    import os

    os.environ["DISTILLERY_DATA_DIR"] = str(root)
    from distillery_assets.filters import ground_truth as gt_lib
    from distillery_assets.filters import pipeline
    from distillery_assets.filters.config import load_filter
    from distillery_assets.filters.paths import FilterPaths
    from distillery_assets.filters.splits import write_splits
    from distillery_assets.io import atomic_write_jsonl
    from tests.support.filters_sample import SAMPLE

    defn = load_filter(SAMPLE)
    paths = FilterPaths.of(defn.name, defn.version)
    cands = gt_lib.candidates(defn, pipeline.SourceLocator())
    pre = gt_lib.prefilter(defn, cands.documents)
    gt = gt_lib.label(defn, pre.passed, blocked={d.id: d.reason for d in pre.decisions if not d.passed})
    atomic_write_jsonl(paths.labels, gt.records)
    meta = write_splits(gt.records, defn, paths.splits_dir)
    return defn, paths, meta


def candidate_table(args) -> None:
    from distillery_assets.filters import pipeline
    from distillery_assets.filters.metrics import candidates_markdown, mae_sentence

    defn, paths, meta = sample_splits(args.work)
    spec = pipeline.train_spec(defn, paths)
    update = {"threads": args.threads}
    if args.candidates:
        update["candidates"] = args.candidates
    if args.max_epochs:
        update["max_epochs"] = dict(kv.split("=") for kv in args.max_epochs)
        update["max_epochs"] = {k: int(v) for k, v in update["max_epochs"].items()}
    spec = spec.model_copy(update={"config": spec.config.model_copy(update=update)})
    start = time.perf_counter()
    result = spec.run(args.work)
    print(f"splits: {meta['train_articles']} train / {meta['val_articles']} val / {meta['test_articles']} test; "
          f"device {result.device}; {time.perf_counter() - start:.0f} s wall")
    print(f"kept: {result.mode}; {mae_sentence(result.test, result.test_examples)}\n")
    print(candidates_markdown([c.model_dump(exclude={'history'}) for c in result.candidates], result.test))


def epoch_timing(args) -> None:
    import numpy as np

    from distillery_assets.filters.train import (FilterTrainConfig, FullFinetune, fit_gradient, load_split, targets)
    from distillery_assets.training.loop import seed_torch

    defn, paths, _ = sample_splits(args.work)
    dims = defn.dimensions
    train = load_split(paths.split_file("train"), dims)[: args.epoch_timing]
    val = load_split(paths.split_file("val"), dims)
    cfg = FilterTrainConfig(mode="full_finetune", max_length=defn.config.training.max_length, epochs=1,
                            batch_size=defn.config.training.batch_size, threads=args.threads, include_title=False,
                            score_min=0, score_max=10)
    y = {"train": targets(train), "val": targets(val)}
    texts = {"train": [e.content for e in train], "val": [e.content for e in val]}
    now_cpu, now_wall, extra_cpu, extra_wall = [], [], [], []
    for _ in range(args.repeat):
        seed_torch(cfg.seed, cfg.threads)
        mode = FullFinetune(cfg, "cpu")
        mode.build(texts, y["train"], len(dims), None)
        c0, w0 = time.process_time(), time.perf_counter()
        fit_gradient(mode, "full_finetune", cfg, y, dims)  # one epoch: training pass (+ its metrics), validation
        now_cpu.append(time.process_time() - c0)
        now_wall.append(time.perf_counter() - w0)
        c0, w0 = time.process_time(), time.perf_counter()
        mode.predict("train", max(cfg.batch_size, 64))  # the pass the trainer used to add for train metrics
        extra_cpu.append(time.process_time() - c0)
        extra_wall.append(time.perf_counter() - w0)
    now, extra = float(np.mean(now_cpu)), float(np.mean(extra_cpu))
    print(f"full_finetune, {len(train)} training + {len(val)} validation passages, max_length {cfg.max_length}, "
          f"batch {cfg.batch_size}, {args.threads} torch threads, mean of {args.repeat}")
    print(f"epoch now (one training pass):          {now:7.1f} CPU s  [{np.mean(now_wall):6.1f} wall s]")
    print(f"the removed second pass over train:     {extra:7.1f} CPU s  [{np.mean(extra_wall):6.1f} wall s]")
    print(f"epoch before (now + that pass):         {now + extra:7.1f} CPU s  "
          f"[{np.mean(now_wall) + np.mean(extra_wall):6.1f} wall s] -> now {1 - now / (now + extra):.0%} less")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="*", default=None)
    parser.add_argument("--max-epochs", nargs="*", default=None, help="per candidate, e.g. full_finetune=4")
    parser.add_argument("--epoch-timing", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args.work = (args.work or Path(tmp)).resolve()
        args.work.mkdir(parents=True, exist_ok=True)
        epoch_timing(args) if args.epoch_timing else candidate_table(args)


if __name__ == "__main__":
    main()
