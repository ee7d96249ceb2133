"""ThymeLM training step: the seed's per-time-step loop vs the parallel recurrence, and the floor.

Same weights, same batches (batch 32, length 128, vocabulary 10,000, the books config): the time of one
forward + backward + AdamW step (with the seed's gradient clipping) for each form, their ratios, the largest
logit difference between the forms, and the floor: the same step for the output MLP alone (576 -> 512 ->
10,000 at every position, on fixed states), which no form of the recurrence can beat. Beside them:

* ``plain parallel``: the first parallel form (outer products by a broadcast multiply, batch-major matmul,
  ``m`` applied to the states), kept here only to show what the current form (``ThymeLM.states_parallel``:
  outer products by a batched matmul, one time-major GEMM, ``m`` folded into the weights) saves.
* ``books-transformer``: the Llama-style decoder of ``data/config/thyme/books-transformer.yaml`` (random
  init), the same step on the same batches, for its tokens/s.

The forms are timed round-robin (one step of each, then again), so load from other processes falls on all of
them alike; each figure is the median over the rounds after one warm-up round, as wall time and as the
process's CPU time (all threads; on shared cores it moves less with other processes' load than wall time
does, though a thread spinning for a busy core still counts). All ratios come from this run. ``loop / floor`` is
the most that any form of the recurrence could gain over the loop on the machine at hand.

Allocator: every step allocates logits and their gradient of batch x length x vocabulary floats (164 MB each).
With glibc's default thresholds these come from fresh ``mmap`` calls that the kernel zero-fills page by page on
every step; measured here that was a third of the run's CPU time as system time, and it fell unevenly on the
forms (in some runs the floor came out slower than the whole model). The benchmark therefore measures as CPU
training runs, after ``training.loop.keep_freed_memory()`` (freed memory kept and reused), and prints whether it
took effect; ``--system-malloc`` measures with glibc's defaults.

    .venv/bin/python benchmarks/thyme_training.py [--steps 5] [--threads 2] [--device cpu] [--no-transformer]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from distillery_assets.device import pick_device
from distillery_assets.thyme.model import N_STATE, ThymeConfig, ThymeLM, parameter_count
from distillery_assets.training.loop import keep_freed_memory


def plain_parallel_logits(model: ThymeLM, ids: torch.Tensor) -> torch.Tensor:
    """The first parallel form, for comparison only (same function as ``ThymeLM.forward``)."""
    c = model.composites(ids)
    d, m = model.rates()
    T = c.size(1)
    outer = (c.unsqueeze(-1) * c.unsqueeze(-2)).flatten(-2)
    t = torch.arange(T, device=c.device)
    lag = (t[:, None] - t[None, :]).to(c.dtype)
    causal = lag >= 0
    weights = torch.exp(torch.where(causal, lag, torch.zeros_like(lag)) * torch.log(d)) * causal
    return model.output(m * torch.matmul(weights, outer))


class Form:
    """One form's model, optimizer and timings: ``step(ids)`` is forward + loss + backward + clip + AdamW."""

    def __init__(self, name: str, forward, params, device: str):
        self.name, self.forward, self.params, self.device = name, forward, list(params), device
        self.opt = torch.optim.AdamW(self.params, lr=2e-3, weight_decay=0.01)
        self.times: list[float] = []
        self.cpu: list[float] = []  # process CPU seconds (all threads): less moved by other processes' load

    def step(self, ids: torch.Tensor) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        logits = self.forward(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), ignore_index=0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)

    @staticmethod
    def _median(values: list[float]) -> float:
        return statistics.median(values[1:] if len(values) > 1 else values)  # the first round warms up

    @property
    def median(self) -> float:
        return self._median(self.times)

    @property
    def cpu_median(self) -> float:
        return self._median(self.cpu)


def transformer_form(vocab: int, device: str) -> tuple[Form, int] | None:
    try:
        from distillery_assets.thyme.experiments import load_experiment
        from distillery_assets.thyme.train import build_model
    except ImportError:
        return None
    arch = load_experiment("books-transformer").models["transformer"]
    torch.manual_seed(0)
    model = build_model(arch, vocab).to(device).train()
    return Form("books-transformer", lambda x: model(x).logits, model.parameters(), device), parameter_count(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="rounds (the first warms up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=pick_device())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--no-transformer", action="store_true")
    ap.add_argument("--system-malloc", action="store_true", help="measure with glibc's default malloc thresholds")
    args = ap.parse_args()
    if args.system_malloc:
        malloc = "glibc defaults (--system-malloc)"
    else:
        malloc = "freed memory kept (as CPU training)" if keep_freed_memory() else "system default (not glibc)"
    torch.set_num_threads(args.threads)
    dev = args.device

    torch.manual_seed(0)
    base = ThymeLM(ThymeConfig.books(vocab_size=args.vocab)).to(dev)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(4, args.vocab, (args.batch, args.length + 1), generator=gen).to(dev)
               for _ in range(args.steps)]

    base.eval()  # no dropout: the forms compute the same function
    with torch.no_grad():
        ids = batches[0][:, :-1]
        par = base(ids).logits
        diff = (par - base(ids, recurrence="loop").logits).abs().max().item()
        diff_plain = (par - plain_parallel_logits(base, ids)).abs().max().item()
    base.train()

    loop_m, par_m, plain_m = (copy.deepcopy(base) for _ in range(3))
    mlp = copy.deepcopy(base.output)
    states = torch.randn(args.batch, args.length, N_STATE, device=dev)
    forms = {
        "loop": Form("seed loop", lambda x: loop_m(x, recurrence="loop").logits, loop_m.parameters(), dev),
        "plain": Form("plain parallel", lambda x: plain_parallel_logits(plain_m, x), plain_m.parameters(), dev),
        "parallel": Form("parallel", lambda x: par_m(x).logits, par_m.parameters(), dev),
        "floor": Form("floor: output MLP only", lambda x: mlp(states), mlp.parameters(), dev),
    }
    n_transformer = None
    if not args.no_transformer:
        made = transformer_form(args.vocab, dev)
        if made is not None:
            forms["transformer"], n_transformer = made

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for ids in batches:
        for form in forms.values():
            form.step(ids)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    tokens = args.batch * args.length
    t = {k: f.median for k, f in forms.items()}
    cpu = {k: f.cpu_median for k, f in forms.items()}
    print(f"device {dev} threads {args.threads} batch {args.batch} length {args.length} vocab {args.vocab} "
          f"rounds {args.steps} (median after one warm-up round, forms interleaved) "
          f"load average {load_before:.2f} -> {load_after:.2f}; malloc: {malloc}")
    print(f"{'form':<26}{'s/step':>10}{'tokens/s':>12}{'x loop':>9}{'/ floor':>9}{'CPU s':>9}{'x loop':>9}"
          f"{'/ floor':>9}   (wall, then process CPU time)")
    for key, form in forms.items():
        print(f"{form.name:<26}{t[key]:>10.4f}{tokens / t[key]:>12.0f}{t['loop'] / t[key]:>9.2f}"
              f"{t[key] / t['floor']:>9.3f}{cpu[key]:>9.3f}{cpu['loop'] / cpu[key]:>9.2f}{cpu[key] / cpu['floor']:>9.3f}")
    print(f"parallel speed-up over the loop: {t['loop'] / t['parallel']:.2f}x (goal on CPU >= 2.5x, on GPU >= 10x)")
    print(f"parallel / floor: {t['parallel'] / t['floor']:.3f} ({(t['parallel'] / t['floor'] - 1) * 100:+.1f}% over "
          f"the floor; goal within 15%)")
    print(f"loop / floor: {t['loop'] / t['floor']:.2f}x (the most any form of the recurrence can gain over the loop "
          f"here)")
    print(f"by CPU time: {cpu['loop'] / cpu['parallel']:.2f}x the loop, {cpu['parallel'] / cpu['floor']:.3f} of the floor")
    print(f"parallel vs plain parallel: {t['plain'] / t['parallel']:.2f}x (CPU time {cpu['plain'] / cpu['parallel']:.2f}x)")
    print(f"max |logit difference| parallel vs loop: {diff:.2e}; vs plain parallel: {diff_plain:.2e} (goal 1e-5)")
    if n_transformer is not None:
        print(f"books-transformer ({n_transformer / 1e6:.2f}M parameters; ThymeLM {parameter_count(base) / 1e6:.2f}M): "
              f"{tokens / t['transformer']:.0f} tokens/s, {t['transformer'] / t['parallel']:.2f}x ThymeLM's step")


if __name__ == "__main__":
    main()
