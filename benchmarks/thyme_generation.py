"""ThymeLM generation memory: the step form's state stays 24x24 fp32 (2,304 bytes) however long the text.

Generates 10,000 tokens with ``ThymeLM.generate`` (the one-token ``step`` form, top-k 50, top-p 0.9) from a
books-config model (random weights, or a trained one with ``--model <thyme_model folder>``) and prints, at
1k / 5k / 10k generated tokens, the state's bytes and the process's resident memory (VmRSS) beside the
resident memory after the first 100 tokens. The only thing that grows with the text is the list of generated
ids itself (a Python int each). For contrast, the KV cache a Llama of ``books-transformer``'s shape would hold
at the same length (arithmetic, not measured; that model also stops at its 256 positions).

    .venv/bin/python benchmarks/thyme_generation.py [--tokens 10000] [--threads 1] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from distillery_assets.thyme.model import ThymeConfig, ThymeLM, state_bytes


def rss_bytes() -> int:
    """Current resident set size (``/proc/self/status`` VmRSS; the peak from getrusage where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kv_cache_bytes(tokens: int, layers: int = 6, kv_heads: int = 4, head_dim: int = 64, dtype_bytes: int = 4) -> int:
    return 2 * layers * kv_heads * head_dim * dtype_bytes * tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", type=Path, help="a trained thyme model folder (model.pt + model.json)")
    ap.add_argument("--checkpoints", default="1000,5000,10000")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        from distillery_assets.thyme.train import load_model

        model = load_model(args.model)
        if not isinstance(model, ThymeLM):
            raise SystemExit(f"{args.model}: not a ThymeLM (the transformer's memory grows with its KV cache)")
    else:
        torch.manual_seed(0)
        model = ThymeLM(ThymeConfig.books())
    marks = sorted({int(x) for x in args.checkpoints.split(",") if int(x) <= args.tokens} | {args.tokens})
    rows: list[tuple[int, int, tuple[int, ...], str, int, float]] = []
    base: dict[str, int] = {}
    t0 = time.perf_counter()

    def watch(i: int, state: torch.Tensor) -> None:
        n = i + 1
        if n == 100:
            base["rss"] = rss_bytes()
        if n in marks:
            rows.append((n, state_bytes(state), tuple(state.shape), str(state.dtype).removeprefix("torch."),
                         rss_bytes(), time.perf_counter() - t0))

    out = model.generate([2], args.tokens, eos_id=None, generator=torch.Generator().manual_seed(0), on_state=watch)
    assert len(out) == args.tokens
    mb = 1024 * 1024
    ids_bytes = sys.getsizeof(out) + sum(sys.getsizeof(t) for t in out if t > 256)  # small ints are shared
    print(f"ThymeLM {model.config.variant} vocab {model.config.vocab_size}, {args.tokens} tokens generated with the "
          f"step form, threads {args.threads}; RSS after 100 tokens {base['rss'] / mb:.1f} MiB")
    print(f"{'tokens':>8}{'state bytes':>13}{'state shape':>14}{'dtype':>9}{'RSS MiB':>10}{'vs 100':>10}"
          f"{'tok/s':>8}{'Llama KV MiB':>14}")
    for n, sb, shape, dtype, rss, elapsed in rows:
        print(f"{n:>8}{sb:>13,}{'x'.join(map(str, shape)):>14}{dtype:>9}{rss / mb:>10.1f}"
              f"{(rss - base['rss']) / mb:>+10.2f}{n / elapsed:>8.0f}{kv_cache_bytes(n) / mb:>14.1f}")
    print(f"state bytes constant: {len({r[1] for r in rows}) == 1} ({rows[-1][1]:,} = 24*24*4); RSS change from 1k to "
          f"{rows[-1][0] // 1000}k tokens: {(rows[-1][4] - rows[0][4]) / mb:+.2f} MiB "
          f"(the generated id list itself: {ids_bytes / mb:.2f} MiB)")


if __name__ == "__main__":
    main()
