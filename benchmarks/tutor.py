"""The tutor on the exported GGUFs against the seed's inference targets: model load < 30 s, first token < 100 ms,
>= 20 tokens/s; idle and beside one busy process; before issue 26 and now, in the same run.

Each cell is a fresh process that loads the educator and poet GGUFs the way the tutor does
(``distillery_assets.poetry.gguf_chat.GGUFChat``) and runs real sessions (``poetry.session.run_session``, the
prompts and sampling of data/config/poetry/inference.yaml, ``--revisions`` critique rounds) with every reply
streamed, so each step gives: the prompt tokens llama.cpp evaluated for it (its own counters), the time to the
first streamed token (counted from the end of the reply before it, so that whatever happens between two turns is
included; the session's first turn from its ask), and tokens per second after it. A step's "prompt tok" are the tokens its own completion
evaluated: its prompt less what the model's context already held (the system prompt primed at load, the
previous turn's shared start, what was read ahead). llama.cpp's own counter is not used for this: it books a
read-ahead's tokens to the next completion.

Variants (same requests, same models):

* ``old``: before issue 26: 2 threads for decode and prompt (inference.yaml's ``n_threads: 2``), nothing
  evaluated at load;
* ``share``: the thread policy's fixed counts (``distillery_assets.threads``: one decode and one prompt thread
  on two cores) and each model's system prompt evaluated at load (``GGUFChat(..., system=...)``), which the
  tutor CLI and ``poetry_sample_sessions`` pass;
* ``noahead``: the policy with its spare cores (``threads.SpareCores``: each turn's prompt threads are the share
  plus every core the rest of the machine left free), primed as ``share``;
* ``new``: what the tutor does now: ``noahead``, and while one model writes, the other reads ahead the turn
  that will carry the text (``GGUFChat.read_ahead``: the draft into the critique's prompt, the brief into the
  draft's), so that turn's prompt is mostly evaluated before it is asked;
* ``nonote``: ``new`` as it was before the draft was also read into the final note's context (the note that
  follows an approving critique then had only the critique's time to be read);
* ``--extra D/B``: the new loading with D decode / B prompt threads (e.g. ``1/2``: a second prompt thread).

``busy``: one ``yes > /dev/null`` beside the cell (started before, killed after; bounded by ``timeout``).
A shared machine is never idle: the load average is printed beside each cell.

    python benchmarks/tutor.py                      # about a minute on 2 cores
    python benchmarks/tutor.py --sessions 2 --extra 1/2 --json tutor.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_llm import _cpu_s, _perf, _wait_for_go, find_tutor_models, load_average, run_cell  # noqa: E402

TARGETS = {"load_s": 30.0, "first_token_ms": 100.0, "tokens_per_s": 20.0}

DRAFT_LAST_CRITIQUE = """The brief was:
{brief}
{history}Critique the poet's current draft against the brief: quote one line that works and one that does not, and
give one direction. If nothing is left to cut, say "this poem has found its shape".
The poet's current draft:
---
{draft}
---
"""
"""The critique's instructions before the draft (variant ``draftlast``): after the draft only its closing
marker is left to evaluate, so reading the draft ahead leaves the critique almost nothing to read."""


def worker(spec: dict) -> dict:
    """One cell: load both models (and prime them when asked), wait for GO, run the sessions streamed."""
    from distillery_assets.poetry.gguf_chat import GGUFChat
    from distillery_assets.poetry.session import Reply, run_session, session_prompts
    from distillery_assets.poetry.settings import ModelSettings, PoetryConfig

    cfg = PoetryConfig()
    inf, prompts = cfg.inference, session_prompts(cfg)
    if spec.get("critique"):
        import dataclasses

        prompts = dataclasses.replace(prompts, critique=spec["critique"])
    settings = ModelSettings(n_threads=spec["n_threads"], n_threads_batch=spec.get("n_threads_batch"))
    t = time.perf_counter()
    educator = GGUFChat(Path(spec["educator"]), settings, system=prompts.educator_system if spec["prime"] else None,
                        contexts=inf.models["educator"].contexts if spec.get("ahead") else 1)
    poet = GGUFChat(Path(spec["poet"]), settings, system=prompts.poet_system if spec["prime"] else None)
    if not spec.get("grid", True):  # "nogrid": each turn starts where the held prefix ends (replies then depend on
        educator.grid = poet.grid = None  # how far a read got; measures what the grid costs)
    load_s = time.perf_counter() - t
    steps: list[dict] = []
    last_end: list[float | None] = [None]  # when the previous turn's reply was complete

    def streamed(chat: GGUFChat, who: str):
        def call(messages, sampling, on_text=None) -> Reply:
            # a turn's wait counts from the end of the reply before it (what a reader of the session waits:
            # closing a read-ahead and choosing a context included), the session's first turn from its ask
            since = last_end[0] if last_end[0] is not None else time.perf_counter()
            from distillery_assets.poetry.gguf_chat import common_prefix, prompt_tokens

            chat.select(messages)  # the context this turn is asked in (GGUFChat.__call__ does the same)
            cpu0, first_cpu = _cpu_s(), None
            kwargs = chat.completion_kwargs(messages, sampling)  # threads, and where on the grid it starts
            prompt = prompt_tokens(chat.llm, messages)  # what this turn evaluates: its prompt less what is held
            new_tokens = len(prompt) - min(common_prefix(chat.llm.input_ids[:chat.llm.n_tokens], prompt),
                                           len(prompt) - 1)
            p0, start, first, text, finish = _perf(chat.llm), time.perf_counter(), None, "", None
            for chunk in chat.llm.create_chat_completion(stream=True, **kwargs):
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content") or ""
                if piece and first is None:
                    first, first_cpu = time.perf_counter() - since, _cpu_s() - cpu0
                text += piece
                if piece and on_text is not None:
                    on_text(text)
                finish = choice.get("finish_reason") or finish
            last_end[0] = time.perf_counter()
            wall, p1 = last_end[0] - start, _perf(chat.llm)
            decoded = p1[3] - p0[3]
            steps.append({"model": who, "first_token_ms": None if first is None else 1000 * first,
                          "first_token_cpu_ms": None if first_cpu is None else 1000 * first_cpu,
                          "prompt_n": new_tokens, "decode_n": decoded, "wall_s": wall,
                          "prompt_threads": chat.llm.n_threads_batch,
                          "tokens_per_s": (decoded + 1) / (last_end[0] - since - first)
                          if first and last_end[0] - since > first else None})
            return Reply(text=text, finish_reason=finish)

        if spec.get("ahead"):  # the session reads this model's next turn ahead while the other one writes
            call.streams_text, call.read_ahead = True, chat.read_ahead
        return call

    if not spec.get("note_draft", True):  # "nonote": a draft is read into the critique and revision brief only
        from distillery_assets.poetry import session as session_module

        readers = session_module._draft_readers
        session_module._draft_readers = lambda *args: readers(*args)[:2]
    from distillery_assets.poetry.evaluate import NAMES_LINE, quotes_poem

    critiques: list[dict] = []
    _wait_for_go()
    try:
        for request in spec["requests"]:
            last_end[0] = None  # a new session: its first turn counts from its ask
            session = run_session(request, educator=streamed(educator, "educator"), poet=streamed(poet, "poet"),
                                  prompts=prompts, sampling=inf.sampling, max_revisions=spec["revisions"],
                                  approval_phrases=inf.approval_phrases)
            meta = session["metadata"]["steps"]
            for step, m in zip(steps[-len(meta):], meta):
                step["step"], step["read_ahead_next"] = m["step"], m.get("next_read_ahead_tokens")
            for r in session["revision_history"]:
                critiques.append({"quotes_draft": quotes_poem(r["critique"], r["draft"]),
                                  "names_line": bool(NAMES_LINE.search(r["critique"])),
                                  "echoes_draft": r["critique_echoes_draft"],
                                  "words": len(r["critique"].split())})
            if session["metadata"]["approved_by"]:
                critiques[-1]["approves"] = True
    finally:
        educator.close()
        poet.close()
    return {"load_s": load_s, "steps": steps, "primed_tokens": [educator.primed_tokens, poet.primed_tokens],
            "critiques": critiques}


def verdict(value: float | None, target: float, below: bool) -> str:
    if value is None:
        return "n/a"
    return "met" if (value < target if below else value >= target) else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=1, help="sessions per cell (requests.txt, in order)")
    parser.add_argument("--revisions", type=int, default=1, help="critique rounds per session (default 1)")
    parser.add_argument("--extra", nargs="*", default=[], metavar="D/B",
                        help="more variants: D decode, B prompt threads")
    parser.add_argument("--gguf-dir", type=Path, help="where the exported GGUFs are (default: data_dir())")
    parser.add_argument("--no-busy", dest="busy", action="store_false", help="idle cells only")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="run only these variants (e.g. new old), in order")
    parser.add_argument("--steps", action="store_true", help="print every step, not only the summary per cell")
    parser.add_argument("--rounds", type=int, default=1,
                        help="cells per variant, taken in turn (a machine whose speed drifts: compare pooled "
                             "figures of interleaved cells); the per-turn table pools them")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(json.loads(args.worker))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from distillery_assets.paths import inputs_dir
    from distillery_assets.poetry.raw_poems import read_requests
    from distillery_assets.threads import policy

    models = find_tutor_models(args.gguf_dir)
    if models is None:
        print(f"no exported *educator*.gguf / *poet*.gguf under {args.gguf_dir or 'data_dir()'}: run scripts/demo.sh "
              f"or pass --gguf-dir", file=sys.stderr)
        return 2
    p = policy()
    variants = {"old": {"n_threads": 2, "n_threads_batch": 2, "prime": False},
                "share": {"n_threads": p.decode, "n_threads_batch": p.batch, "prime": True},
                "noahead": {"n_threads": None, "n_threads_batch": None, "prime": True},
                "new": {"n_threads": None, "n_threads_batch": None, "prime": True, "ahead": True},
                "nonote": {"n_threads": None, "n_threads_batch": None, "prime": True, "ahead": True,
                           "note_draft": False},
                "draftlast": {"n_threads": None, "n_threads_batch": None, "prime": True, "ahead": True,
                              "critique": DRAFT_LAST_CRITIQUE},
                "nogrid": {"n_threads": None, "n_threads_batch": None, "prime": True, "ahead": True, "grid": False}}
    for extra in args.extra:
        d, _, b = extra.partition("/")
        variants[f"new {extra}"] = {"n_threads": int(d), "n_threads_batch": int(b or d), "prime": True,
                                    "ahead": True}
    if args.only:
        unknown = [n for n in args.only if n not in variants]
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; known: {list(variants)}")
        variants = {n: variants[n] for n in args.only}
    requests = read_requests(inputs_dir() / "poetry" / "requests.txt")[: args.sessions]
    print(f"tutor on {models[0].name} + {models[1].name}; {len(requests)} session(s) per cell, {args.revisions} "
          f"critique round(s); new policy: decode {p.decode}, batch {p.batch} [{p.source}]")
    print(f"targets: load < {TARGETS['load_s']:g} s, first token < {TARGETS['first_token_ms']:g} ms, "
          f">= {TARGETS['tokens_per_s']:g} tokens/s\n")
    header = (f"{'variant':<10} {'d/b':<4} {'condition':<9} {'load s':>6} {'primed':>7} {'steps':>5} "
              f"{'prompt tok':>10} {'first ms med':>12} {'first ms max':>12} {'tok/s min':>9} {'tok/s med':>9}"
              f"  load avg")
    print(header)
    print("-" * len(header))
    cells = {}
    conditions = ("idle", "busy") if args.busy else ("idle",)
    for condition, rnd, (name, v) in [(c, r, nv) for c in conditions for r in range(args.rounds)
                                      for nv in variants.items()]:
        spec = {**v, "educator": str(models[0]), "poet": str(models[1]), "requests": requests,
                "revisions": args.revisions}
        r = run_cell(spec, 1, condition == "busy", script=__file__)[0]
        steps = r["steps"]
        firsts = [s["first_token_ms"] for s in steps if s["first_token_ms"] is not None]
        rates = [s["tokens_per_s"] for s in steps if s["tokens_per_s"]]
        summary = {"load_s": r["load_s"], "primed_tokens": r["primed_tokens"],
                   "first_ms_median": statistics.median(firsts) if firsts else None,
                   "first_ms_max": max(firsts) if firsts else None,
                   "first_ms_first_step": firsts[0] if firsts else None,
                   "tps_min": min(rates) if rates else None,
                   "tps_median": statistics.median(rates) if rates else None,
                   "prompt_tokens_median": statistics.median(s["prompt_n"] for s in steps),
                   "load_average": load_average(), "steps": steps, "critiques": r["critiques"]}
        cells[f"{name}/{condition}" + (f"#{rnd + 1}" if args.rounds > 1 else "")] = summary
        f = lambda x, spec_: format(x, spec_) if x is not None else "n/a"  # noqa: E731
        threads = "auto" if v["n_threads"] is None else f"{v['n_threads']}/{v['n_threads_batch']}"
        print(f"{name:<10} {threads:<4} {condition:<9} {r['load_s']:>6.2f} "
              f"{'+'.join(map(str, r['primed_tokens'])):>7} {len(steps):>5} "
              f"{f(summary['prompt_tokens_median'], '.0f'):>10} {f(summary['first_ms_median'], '.0f'):>12} "
              f"{f(summary['first_ms_max'], '.0f'):>12} {f(summary['tps_min'], '.1f'):>9} "
              f"{f(summary['tps_median'], '.1f'):>9}  {summary['load_average']}  prompt threads "
              f"{'/'.join(str(n) for n in sorted({s['prompt_threads'] for s in steps}))}", flush=True)
        if args.steps:
            for s in steps:
                print(f"    {s.get('step', '?'):<18} {s['model']:<8} prompt {s['prompt_n']:>4} tok "
                      f"({s['prompt_threads']} thr)  first "
                      f"{f(s['first_token_ms'], '.0f'):>5} ms ({f(s['first_token_cpu_ms'], '.0f'):>4} ms CPU)  "
                      f"{f(s['tokens_per_s'], '.1f'):>6} tok/s  "
                      f"{s['decode_n']:>4} tok"
                      + (f"  (read {s['read_ahead_next']} tok of the next turn ahead)"
                         if s.get("read_ahead_next") else ""))
    print("\nfirst token by turn (median ms over every cell's turns of that kind; turns; median prompt tokens the "
          "turn evaluated):")
    kinds = ("brief", "draft", "critique", "revision brief", "revision", "final note", "final note after approval")
    for key in dict.fromkeys(k.split("#")[0] for k in cells):
        pooled: dict[str, list[dict]] = {k: [] for k in kinds}
        for k, c in cells.items():
            if k.split("#")[0] != key:
                continue
            for prev, s in zip([None] + c["steps"][:-1], c["steps"]):
                kind = " ".join(w for w in s.get("step", "?").split() if not w.isdigit())
                if kind == "final note" and prev is not None and prev.get("step", "").startswith("critique"):
                    kind = "final note after approval"
                if kind in pooled and s["first_token_ms"] is not None:
                    pooled[kind].append(s)
        print(f"  {key:<12} " + "; ".join(
            f"{kind} {statistics.median(s['first_token_ms'] for s in ss):.0f} ({len(ss)}; "
            f"{statistics.median(s['prompt_n'] for s in ss):.0f} tok)" for kind, ss in pooled.items() if ss))
    print("\nthe critiques (every cell's rounds of that variant; quoting a line of the draft and naming a line are "
          "what the prompt asks for, echoing the draft is a failure):")
    for key in dict.fromkeys(k.split("#")[0] for k in cells):
        cs = [c for k, cell in cells.items() if k.split("#")[0] == key for c in cell["critiques"]]
        if cs:
            n = len(cs)
            print(f"  {key:<12} {n} critiques: quote the draft {sum(c['quotes_draft'] for c in cs)}/{n}, "
                  f"name a line {sum(c['names_line'] for c in cs)}/{n}, "
                  f"echo it {sum(c['echoes_draft'] for c in cs)}/{n}, "
                  f"approve {sum(c.get('approves', False) for c in cs)}/{n}; "
                  f"median {statistics.median(c['words'] for c in cs):.0f} words")
    print("\nagainst the seed's targets (worst step of each cell):")
    for key, c in cells.items():
        print(f"  {key:<16} load {c['load_s']:.2f} s {verdict(c['load_s'], TARGETS['load_s'], True)}; "
              f"first token max {c['first_ms_max']:.0f} ms "
              f"{verdict(c['first_ms_max'], TARGETS['first_token_ms'], True)}"
              f" (median {c['first_ms_median']:.0f}, the session's first reply {c['first_ms_first_step']:.0f}); "
              f"tokens/s min {c['tps_min']:.1f} {verdict(c['tps_min'], TARGETS['tokens_per_s'], False)}")
    if args.json:
        args.json.write_text(json.dumps({"variants": variants, "cells": cells}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
