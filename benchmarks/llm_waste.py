"""Tokens the main job's LLM steps generate against the tokens they keep, when a reply cut off at max_tokens is
asked afresh (before issue 26) and when the local provider continues it (now), in the same run.

Each variant is a fresh process that sends the same requests of the main job (the verse briefs of
``poetry_poet_pairs``, its largest LLM step, and the briefs, critiques and lessons; prompts, temperatures and
token budgets from data/config/poetry) through ``LLMClient`` with its default length retry (once, twice the
budget) to the local SmolLM2, no cache. Printed per variant: requests answered (kept) and failed, the tokens
decoded in all (llama.cpp's own counter), the tokens of the kept replies, CPU seconds. Token counts do not
depend on the machine's load; CPU seconds nearly so (one decode thread); wall seconds are printed but are
only comparable on a quiet machine.

    python benchmarks/llm_waste.py                     # 12 verse briefs + 6 teaching requests per variant
    python benchmarks/llm_waste.py --verse 36 --teaching 0
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def requests(verse: int, teaching: int) -> list[dict]:
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
    return [r.model_dump() for r in out]


def worker(spec: dict) -> dict:
    import llama_cpp

    from distillery_assets.llm.client import LLMClient
    from distillery_assets.llm.providers.local import LocalProvider
    from distillery_assets.llm.types import LLMRequest

    provider = LocalProvider(continue_cut=spec["continue"])
    model = provider.model_id(None)
    provider.prepare(model)
    llm, _ = provider._model(provider._resolve_path(model))
    client = LLMClient(provider, cache_dir=None)  # the default length retry: once, twice the budget
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    t0 = time.perf_counter()
    perf0 = llama_cpp.llama_perf_context(llm._ctx.ctx)
    decoded0, prompt0 = perf0.n_eval, perf0.n_p_eval
    kept = failed = kept_tokens = attempts = 0
    for raw in spec["requests"]:
        request = LLMRequest(**raw)
        result = client.complete(request)
        attempts += result.attempts
        if result.ok:
            kept += 1
            kept_tokens += len(llm.tokenize((result.text or "").encode("utf-8"), add_bos=False))
        else:
            failed += 1
    perf1 = llama_cpp.llama_perf_context(llm._ctx.ctx)
    return {"kept": kept, "failed": failed, "attempts": attempts, "decoded": perf1.n_eval - decoded0,
            "prompt_evaluated": perf1.n_p_eval - prompt0, "kept_tokens": kept_tokens,
            "continued_tokens": provider.continued_tokens,
            "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--verse", type=int, default=12, help="verse briefs (poetry_poet_pairs) per variant")
    parser.add_argument("--teaching", type=int, default=6, help="briefs/critiques/lessons requests per variant")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    reqs = requests(args.verse, args.teaching)
    load = lambda: " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: E731
    print(f"{len(reqs)} requests per variant ({args.verse} verse briefs, {args.teaching} teaching); "
          f"load average at start {load()}\n")
    header = (f"{'variant':<22} {'kept':>4} {'failed':>6} {'asks':>4} {'decoded':>7} {'kept tok':>8} "
              f"{'kept/decoded':>12} {'prompt eval':>11} {'CPU s':>6} {'wall s':>6}  load avg")
    print(header)
    print("-" * len(header))
    rows = {}
    for name, cont in (("old: asked afresh", False), ("new: continued", True)):
        out = subprocess.run([sys.executable, __file__, "--worker", json.dumps({"continue": cont, "requests": reqs})],
                             capture_output=True, text=True, cwd=ROOT, timeout=3600)
        found = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not found:
            raise SystemExit(f"worker failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr[-1500:]}")
        r = rows[name] = json.loads(found[-1][len("RESULT "):])
        print(f"{name:<22} {r['kept']:>4} {r['failed']:>6} {r['attempts']:>4} {r['decoded']:>7} {r['kept_tokens']:>8} "
              f"{r['kept_tokens'] / max(1, r['decoded']):>12.2f} {r['prompt_evaluated']:>11} {r['cpu_s']:>6.1f} "
              f"{r['wall_s']:>6.1f}  {load()}", flush=True)
    old, new = rows["old: asked afresh"], rows["new: continued"]
    print(f"\nnew / old: decoded tokens {new['decoded'] / max(1, old['decoded']):.2f}, CPU s "
          f"{new['cpu_s'] / max(1e-9, old['cpu_s']):.2f}, CPU s per kept token "
          f"{(new['cpu_s'] / max(1, new['kept_tokens'])) / max(1e-9, old['cpu_s'] / max(1, old['kept_tokens'])):.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
