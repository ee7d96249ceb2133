"""A LoRA fine-tune with the output head on the label positions only, against all logits, in the same run.

``training/loop.py``'s ``token_nll`` runs SmolLM2's 49,152-word output head only where a label is predicted
(a chat example's reply; its prompt has no loss). This trains the same LoRA both ways, alternating, on the
same data and settings, and prints each run's training seconds (the loop's own clock: steps and validation
passes, no model load), tokens/s and losses, then the ratio of the medians. The losses must agree up to float
rounding: the two ways compute the same loss.

    python benchmarks/lora_head.py                          # the demo ChatML set in a fresh folder, poet cpu_small
    python benchmarks/lora_head.py --data-dir DIR --train poetry/datasets/poet/train.jsonl \\
        --val poetry/datasets/poet/valid.jsonl              # e.g. a kept benchmarks/main_job.py data folder
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="poet", choices=["educator", "poet", "theme"])
    parser.add_argument("--profile", default="cpu_small")
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary folder with the demo ChatML set")
    parser.add_argument("--train", default="demo/train.jsonl", help="relative to --data-dir")
    parser.add_argument("--val", default="demo/val.jsonl", help="relative to --data-dir")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each way, alternating (default 2)")
    args = parser.parse_args(argv)
    os.environ["DISTILLERY_DATA_DIR"] = str(args.data_dir or tempfile.mkdtemp(prefix="distillery-lora-head-"))

    from distillery_assets.paths import config_dir, data_dir
    from distillery_assets.threads import apply_torch_threads
    from distillery_assets.training import loop
    from distillery_assets.training.base_model import build_embedded_base, embedded_base_dir
    from distillery_assets.training.config import load_train_config
    from distillery_assets.training.demo_data import write_demo_chatml
    from distillery_assets.training.steps import TrainLoraSpec

    root = data_dir()
    if args.train.startswith("demo/"):
        write_demo_chatml(root / "demo")
    build_embedded_base(embedded_base_dir(root))
    cfg = load_train_config(config_dir() / "training" / f"{args.role}.yaml", args.profile)
    threads = apply_torch_threads()
    labels_only = loop.HEAD_ON_LABELS_ONLY
    rows = []
    print(f"role {args.role}, profile {cfg.profile}, data {root} ({args.train}), torch threads {threads}")
    print(f"{'way':<13} {'round':>5} {'train s':>8} {'tokens/s':>9} {'train loss':>11} {'val loss':>9}")
    for r in range(args.rounds):
        for way, archs in (("labels only", labels_only), ("all logits", ())):
            loop.HEAD_ON_LABELS_ONLY = archs
            adapter = f"benchmarks/lora_head/{args.role}-{way.replace(' ', '_')}-{r}"
            shutil.rmtree(root / adapter, ignore_errors=True)  # a fresh run, never the finished one
            try:
                res = TrainLoraSpec(config=cfg, train=args.train, val=args.val, adapter_dir=adapter).run(root)
            finally:
                loop.HEAD_ON_LABELS_ONLY = labels_only
            rows.append((way, res))
            print(f"{way:<13} {r:>5} {res.train_seconds:>8.1f} {res.tokens_per_s:>9.0f} {res.train_loss:>11.5f} "
                  f"{res.val_loss:>9.5f}", flush=True)
    med = {way: statistics.median(res.train_seconds for w, res in rows if w == way)
           for way in ("labels only", "all logits")}
    print(f"\nlabels only / all logits, median training seconds: {med['labels only'] / med['all logits']:.2f} "
          f"({med['labels only']:.1f} s against {med['all logits']:.1f} s, {args.rounds} runs each)")
    first = {w: res for w, res in rows[:2]}
    print(f"validation loss, round 0: {first['labels only'].val_loss:.6f} against {first['all logits'].val_loss:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
