"""ThymeLM training step: the seed's per-time-step loop vs the parallel recurrence, and the floor.

Same weights, same batches (batch 32, length 128, vocabulary 10,000, the books config): the time of one
forward + backward + AdamW step for each form, their ratio, the largest logit difference between the
forms, and the floor: the same step for the output MLP alone (576 -> 512 -> 10,000 at every position),
which no form of the recurrence can beat. All ratios are measured in this run.

    .venv/bin/python benchmarks/thyme_training.py [--steps 5] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from distillery_assets.thyme.model import N_STATE, ThymeConfig, ThymeLM


def step_time(forward, params, batches, device) -> float:
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    times = []
    for ids in batches:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = forward(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), ignore_index=0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times = times[1:] if len(times) > 1 else times  # the first step warms up
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device

    torch.manual_seed(0)
    base = ThymeLM(ThymeConfig.books(vocab_size=args.vocab)).to(dev)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(4, args.vocab, (args.batch, args.length + 1), generator=gen).to(dev)
               for _ in range(args.steps)]

    base.eval()  # no dropout: both forms compute the same function
    with torch.no_grad():
        ids = batches[0][:, :-1]
        diff = (base(ids).logits - base(ids, recurrence="loop").logits).abs().max().item()
    base.train()

    loop_model, par_model = copy.deepcopy(base), copy.deepcopy(base)
    t_loop = step_time(lambda x: loop_model(x, recurrence="loop").logits, list(loop_model.parameters()), batches, dev)
    t_par = step_time(lambda x: par_model(x).logits, list(par_model.parameters()), batches, dev)

    mlp = copy.deepcopy(base.output)
    states = torch.randn(args.batch, args.length, N_STATE, device=dev)
    t_floor = step_time(lambda x: mlp(states), list(mlp.parameters()), batches, dev)

    tokens = args.batch * args.length
    print(f"device {dev} threads {args.threads} batch {args.batch} length {args.length} vocab {args.vocab} "
          f"steps {args.steps} (median after one warm-up)")
    print(f"{'form':<24}{'s/step':>10}{'tokens/s':>12}")
    for name, t in (("seed loop", t_loop), ("parallel", t_par), ("floor: output MLP only", t_floor)):
        print(f"{name:<24}{t:>10.4f}{tokens / t:>12.0f}")
    print(f"parallel speed-up over the loop: {t_loop / t_par:.2f}x")
    print(f"parallel / floor: {t_par / t_floor:.3f} ({(t_par / t_floor - 1) * 100:+.1f}% over the floor)")
    print(f"max |logit difference| parallel vs loop: {diff:.2e}")


if __name__ == "__main__":
    main()
