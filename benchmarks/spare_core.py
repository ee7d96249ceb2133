"""A long torch step on two cores: its fixed share, the spare core it takes when nobody uses it, or two threads.

The workload is ``books-transformer``'s training (the Llama-style decoder of
``data/config/thyme/books-transformer.yaml``, batch 32 x 128 tokens, bf16 autocast where the CPU has it) run
through the project's own ``training.loop.train_loop`` on synthetic windows, ``--steps`` optimizer steps per
cell. Each cell is a fresh process; per cell: the median wall and CPU seconds of a step (after the first two),
and the seconds the loop spent at each thread count (``threads.SpareCores``, recorded in the epoch's history).

Variants (same steps, same batches):

* ``share``: the thread policy's fixed share (``DISTILLERY_THREADS_ADAPT=0``: one thread on two cores with two
  model slots), what every torch step used before;
* ``new``: the default now: the share plus every core the rest of the machine leaves free, re-checked every
  ``threads.ADAPT_INTERVAL_S`` seconds;
* ``two``: two threads, fixed (``DISTILLERY_THREADS=2``): the simple alternative, best when the machine is idle.

``busy``: one ``yes > /dev/null`` beside the cell (``local_llm.Busy``). Prints ratios within this run.

    .venv/bin/python benchmarks/spare_core.py [--steps 12] [--no-busy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_llm import Busy, load_average  # noqa: E402

VARIANTS = {"share": {"DISTILLERY_THREADS_ADAPT": "0"}, "new": {}, "two": {"DISTILLERY_THREADS": "2"}}


def worker(steps: int) -> dict:
    import random

    import torch

    from distillery_assets.thyme.experiments import load_experiment
    from distillery_assets.thyme.train import build_model, loop_config
    from distillery_assets.training.chat_data import IGNORE, Example
    from distillery_assets.training.loop import amp_dtype, keep_freed_memory, seed_torch, train_loop

    exp = load_experiment("books-transformer")
    vocab, window = exp.tokenizer.vocab_size, exp.dataset.window
    cfg = loop_config(exp, "transformer", 10_000)
    cfg = cfg.model_copy(update={"max_steps": steps, "epochs": 1, "checkpoint_every": 0, "warmup_ratio": 0.0,
                                 "autocast": amp_dtype("cpu") if exp.training_for("transformer").amp else None})
    rng = random.Random(0)
    windows = [[rng.randrange(4, vocab) for _ in range(window + 1)] for _ in range(cfg.batch_size * steps + 8)]
    train = [Example(w, [IGNORE] + w[1:], f"synthetic:{i}") for i, w in enumerate(windows[:-8])]
    val = [Example(w, [IGNORE] + w[1:], f"synthetic-val:{i}") for i, w in enumerate(windows[-8:])]
    keep_freed_memory()
    seed_torch(cfg.seed, cfg.threads)
    model = build_model(exp.models["transformer"], vocab)
    marks: list[tuple[float, float]] = []

    def progress(_p) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    start = (time.perf_counter(), time.process_time())
    run = train_loop(model, train, val, cfg, device="cpu", pad_id=0, progress=progress)
    points = [start, *marks]
    walls = [b[0] - a[0] for a, b in zip(points, points[1:])][2:]
    cpus = [b[1] - a[1] for a, b in zip(points, points[1:])][2:]
    return {"steps": run.steps, "step_wall_s": statistics.median(walls), "step_cpu_s": statistics.median(cpus),
            "threads": run.history.epochs[-1].get("threads"), "autocast": cfg.autocast}


def run_cell(variant: str, busy: bool, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISTILLERY_THREADS", "DISTILLERY_THREADS_ADAPT")}
    env.update(VARIANTS[variant])
    with Busy(busy):
        out = subprocess.run([sys.executable, __file__, "--worker", str(steps)], env=env, capture_output=True,
                             text=True, check=False)
        load = load_average()
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{variant}/{'busy' if busy else 'idle'} failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return {**json.loads(lines[-1][7:]), "load_average": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per cell (default 12)")
    parser.add_argument("--no-busy", dest="busy", action="store_false", help="idle cells only")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="these variants only, in order")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker)), flush=True)
        return 0

    from distillery_assets.threads import policy

    p = policy()
    print(f"books-transformer training steps through train_loop, {args.steps} per cell; policy: {p.cores} cores, "
          f"{p.slots} slots, share {p.torch} thread(s)\n")
    header = f"{'variant':<7} {'condition':<9} {'s/step':>7} {'CPU s/step':>10}  {'seconds at 1 / 2 threads':<26} load avg"
    print(header)
    print("-" * len(header))
    cells: dict[str, dict] = {}
    for condition in ("idle", "busy") if args.busy else ("idle",):
        for variant in args.only or list(VARIANTS):
            r = run_cell(variant, condition == "busy", args.steps)
            cells[f"{variant}/{condition}"] = r
            secs = (r.get("threads") or {}).get("thread_seconds") or {}
            at = " / ".join(f"{secs.get(k, 0.0):.1f}" for k in ("1", "2"))
            print(f"{variant:<7} {condition:<9} {r['step_wall_s']:>7.2f} {r['step_cpu_s']:>10.2f}  {at:<26} "
                  f"{r['load_average']}", flush=True)

    def ratio(a: str, b: str, key: str = "step_wall_s") -> str:
        return f"{cells[a][key] / cells[b][key]:.2f}" if a in cells and b in cells else "n/a"

    print("\nstep time ratios (lower is faster):")
    for condition in ("idle", "busy"):
        print(f"  {condition}: new/share {ratio(f'new/{condition}', f'share/{condition}')}, "
              f"new/two {ratio(f'new/{condition}', f'two/{condition}')}; CPU per step new/share "
              f"{ratio(f'new/{condition}', f'share/{condition}', 'step_cpu_s')}, new/two "
              f"{ratio(f'new/{condition}', f'two/{condition}', 'step_cpu_s')}")
    for variant in args.only or list(VARIANTS):
        print(f"  {variant} busy/idle: {ratio(f'{variant}/busy', f'{variant}/idle')}")
    if args.json:
        args.json.write_text(json.dumps(cells, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
