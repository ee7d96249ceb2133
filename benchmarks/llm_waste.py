"""Tokens the main job's LLM steps generate against the tokens they keep, when a reply cut off at max_tokens is
asked afresh (before issue 26), when the local provider continues it, and when it also stops a reply caught in a
repetition loop (now: ``LocalProvider(stop_loops=True)``, finish reason ``repetition``), in the same run.

Each variant is a fresh process that sends the same requests of the main job (the verse briefs of
``poetry_poet_pairs``, its largest LLM step, and the briefs, critiques and lessons; prompts, temperatures and
token budgets from data/config/poetry) through ``LLMClient`` with its default length retry (once, twice the
budget) to the local SmolLM2, no cache. Printed per variant: requests answered (kept) and failed, the tokens
decoded in all (llama.cpp's own counter), the tokens of the kept replies, CPU seconds, and the failures by
reason. Token counts do not depend on the machine's load; CPU seconds nearly so (one decode thread); wall
seconds are printed but are only comparable on a quiet machine.

The loop stop only ends a reply earlier, so with ``--seed`` each of its replies is the start of the one the
"continued" variant got, and the run also counts the replies that stopped by themselves there and that the loop
stop cut (false positives; 0 is the aim) and the tokens it saved on the replies it stopped. Without ``--seed``
the requests are the main job's own (no seed), and llama-cpp-python then draws each call's seed from the one
before (``Llama.set_seed``), so a variant that makes fewer calls samples every later request differently: the
totals compare, single replies do not. ``--seed N`` gives request i the seed N + i in every variant.

    python benchmarks/llm_waste.py                     # 12 verse briefs + 6 teaching requests per variant
    python benchmarks/llm_waste.py --verse 36 --teaching 0
    python benchmarks/llm_waste.py --verse 0 --teaching 12 --variants 2 3 --jobs 2   # two variants side by side

``--jobs N`` runs N variants' processes at once (on a busy machine that gets them more of it; token counts and
each process's CPU seconds are still its own, wall seconds then mean nothing).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def requests(verse: int, teaching: int, seed: int | None = None) -> list[dict]:
    from distillery_assets.paths import inputs_dir
    from distillery_assets.poetry import tasks
    from distillery_assets.poetry.raw_poems import load_poems, read_requests
    from distillery_assets.poetry.settings import PoetryConfig

    cfg = PoetryConfig()
    root = inputs_dir() / "poetry"
    out = []
    verse_task, rows = tasks.verse_briefs(cfg, load_poems(root, "verse")[0], verse)
    out += [verse_task.prompt(r) for r in rows]
    good, _ = load_poems(root, "good")
    built = [tasks.briefs(cfg, read_requests(root / "requests.txt"), teaching),
             tasks.critiques(cfg, good, [], teaching), tasks.lessons(cfg, teaching)]
    for i in range(teaching):
        task, items = built[i % len(built)]
        out.append(task.prompt(items[(i // len(built)) % len(items)]))
    out = [r.model_dump() for r in out]
    if seed is not None:
        out = [{**r, "seed": seed + i} for i, r in enumerate(out)]
    return out


def worker(spec: dict) -> dict:
    import llama_cpp

    from distillery_assets.llm.client import LLMClient
    from distillery_assets.llm.providers.local import LocalProvider
    from distillery_assets.llm.types import LLMRequest

    provider = LocalProvider(continue_cut=spec["continue"], stop_loops=spec["stop_loops"])
    model = provider.model_id(None)
    provider.prepare(model)
    llm, _ = provider._model(provider._resolve_path(model))
    client = LLMClient(provider, cache_dir=None)  # the default length retry: once, twice the budget
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    t0 = time.perf_counter()
    perf0 = llama_cpp.llama_perf_context(llm._ctx.ctx)
    decoded0, prompt0 = perf0.n_eval, perf0.n_p_eval
    kept = failed = kept_tokens = attempts = 0
    outcomes, failures = [], {}
    for raw in spec["requests"]:
        request = LLMRequest(**raw)
        result = client.complete(request)
        attempts += result.attempts
        outcomes.append([result.finish_reason, result.usage.output_tokens])
        if result.ok:
            kept += 1
            kept_tokens += len(llm.tokenize((result.text or "").encode("utf-8"), add_bos=False))
        else:
            failed += 1
            failures[result.error_kind or "other"] = failures.get(result.error_kind or "other", 0) + 1
    perf1 = llama_cpp.llama_perf_context(llm._ctx.ctx)
    return {"kept": kept, "failed": failed, "attempts": attempts, "decoded": perf1.n_eval - decoded0,
            "prompt_evaluated": perf1.n_p_eval - prompt0, "kept_tokens": kept_tokens,
            "continued_tokens": provider.continued_tokens, "failures": failures, "outcomes": outcomes,
            "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0, "wall_s": time.perf_counter() - t0}


VARIANTS = (("old: asked afresh", False, False), ("continued", True, False), ("continued + loop stop", True, True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--verse", type=int, default=12, help="verse briefs (poetry_poet_pairs) per variant")
    parser.add_argument("--teaching", type=int, default=6, help="briefs/critiques/lessons requests per variant")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--variants", type=int, nargs="+", default=[1, 2, 3],
                        help="which variants (1 old: asked afresh, 2 continued, 3 continued + loop stop)")
    parser.add_argument("--jobs", type=int, default=1, help="variant processes run at once")
    parser.add_argument("--seed", type=int, help="request i gets seed SEED + i (replies then compare one by one)")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    reqs = requests(args.verse, args.teaching, args.seed)
    load = lambda: " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: E731
    seeds = "no seeds (as the main job asks)" if args.seed is None else f"request i with seed {args.seed} + i"
    print(f"{len(reqs)} requests per variant ({args.verse} verse briefs, {args.teaching} teaching); {seeds}; "
          f"load average at start {load()}\n")
    header = (f"{'variant':<22} {'kept':>4} {'failed':>6} {'asks':>4} {'decoded':>7} {'kept tok':>8} "
              f"{'kept/decoded':>12} {'prompt eval':>11} {'CPU s':>6} {'wall s':>6}  load avg  failures")
    print(header)
    print("-" * len(header))
    rows = {}
    chosen = [VARIANTS[i - 1] for i in args.variants]

    def run(variant) -> dict:
        name, cont, loops = variant
        spec = {"continue": cont, "stop_loops": loops, "requests": reqs}
        out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                             capture_output=True, text=True, cwd=ROOT, timeout=3600)
        found = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not found:
            raise SystemExit(f"worker failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr[-1500:]}")
        return json.loads(found[-1][len("RESULT "):])

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [(variant[0], pool.submit(run, variant)) for variant in chosen]
        for name, future in futures:
            r = rows[name] = future.result()
            print(f"{name:<22} {r['kept']:>4} {r['failed']:>6} {r['attempts']:>4} {r['decoded']:>7} "
                  f"{r['kept_tokens']:>8} {r['kept_tokens'] / max(1, r['decoded']):>12.2f} {r['prompt_evaluated']:>11} "
                  f"{r['cpu_s']:>6.1f} {r['wall_s']:>6.1f}  {load()}  {r['failures']}", flush=True)
    print()
    old = rows.get(VARIANTS[0][0])
    for name, *_ in VARIANTS[1:] if old else ():
        new = rows[name]
        print(f"{name} / {VARIANTS[0][0]}: decoded tokens {new['decoded'] / max(1, old['decoded']):.2f}, CPU s "
              f"{new['cpu_s'] / max(1e-9, old['cpu_s']):.2f}, CPU s per kept token "
              f"{(new['cpu_s'] / max(1, new['kept_tokens'])) / max(1e-9, old['cpu_s'] / max(1, old['kept_tokens'])):.2f}")
    free, stopped = rows.get(VARIANTS[1][0]), rows.get(VARIANTS[2][0])
    if free is not None and stopped is not None:
        _compare(free, stopped, args.seed is not None)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


def _compare(free: dict, stopped: dict, seeded: bool) -> None:
    """The loop stop against the continuation alone (with seeds, each reply of the one is the start of the
    other's)."""
    print(f"{VARIANTS[2][0]} / {VARIANTS[1][0]}: decoded tokens {stopped['decoded'] / max(1, free['decoded']):.2f}, "
          f"CPU s {stopped['cpu_s'] / max(1e-9, free['cpu_s']):.2f}; replies stopped as loops "
          f"{sum(b[0] == 'repetition' for b in stopped['outcomes'])}")
    if not seeded:
        print("(no seeds: the variants sample later requests differently, so replies are not compared one by one)")
        return
    pairs = list(zip(free["outcomes"], stopped["outcomes"]))
    cut = [i for i, (a, b) in enumerate(pairs) if a[0] == "stop" and b[0] == "repetition"]
    caught = [(a, b) for a, b in pairs if a[0] != "stop" and b[0] == "repetition"]
    other = [i for i, (a, b) in enumerate(pairs) if b[0] != "repetition" and a != b]
    print(f"replies that did not stop by themselves there: {sum(a[0] != 'stop' for a, _ in pairs)}, stopped here as "
          f"loops {len(caught)}, decoding {sum(b[1] for _, b in caught)} tokens instead of "
          f"{sum(a[1] for a, _ in caught)}; replies that stopped by themselves there and were stopped as loops here "
          f"(false positives): {len(cut)} {cut}; other differences (should be none): {other}")


if __name__ == "__main__":
    raise SystemExit(main())
