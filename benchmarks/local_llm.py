"""The local LLM provider's throughput under today's thread policy and the new one, idle and beside a busy process.

Each figure comes from a fresh child process that builds the provider the way the pipeline does
(``build_provider(LLMSettings(provider="local", ...))``) and sends the main job's own requests (the poetry
teaching tasks: briefs, critiques of shipped poems, craft lessons; their prompts, temperatures and token budgets
from data/config/poetry). llama.cpp's own counters split each call into prompt work and decoding.

Policies (same run, same requests):

* ``old``: ``n_threads = os.cpu_count()``, ``n_threads_batch`` unset (llama-cpp-python then uses the CPU count
  too): the project's setting before issue 26; its ``local_model`` pool ran one LLM step at a time.
* ``new``: ``distillery_assets.threads`` (decode, batch threads); the pool runs ``slots`` steps side by side.
* ``--extra D/B``: more candidates (D decode threads, B batch threads), e.g. ``--extra 1/2 2/1``.

Conditions: ``idle`` (whatever else the machine runs: a shared machine is not idle, the load average is printed)
and ``busy``: one CPU-bound process (``yes > /dev/null``) that the benchmark starts before the cell and kills
after it (each bounded by ``timeout``, so none outlives the benchmark).

Modes: ``single``: one process, the requests one after another; ``job``: the main job's real concurrency, as
many LLM steps side by side as the policy's pool allows (old: 1, so the same as ``single``; new: ``slots``),
each step its own process with its own copy of the requests.

Printed per cell: prompt tokens/s and decode tokens/s (llama.cpp's counters, summed over the processes),
generated tokens per wall second (end to end, sampling included), CPU seconds per generated token. Then the
ratios the issue's goals name. Then the tutor (``--tutor``, on by default): model load, first token, tokens/s of
the session's first steps on the exported GGUFs (``*educator*.gguf``, ``*poet*.gguf`` under data_dir(), or
``--gguf-dir``), idle and busy, old and new (new: each system prompt evaluated at load, ``GGUFChat(system=)``);
skipped with a message when there are none (``--tutor-base``: the bundled base SmolLM2-135M stands in, labelled
so). ``benchmarks/tutor.py`` times whole sessions against the seed's targets.

    python benchmarks/local_llm.py                       # about 3-4 minutes on 2 cores
    python benchmarks/local_llm.py --requests 2 --no-tutor
    python benchmarks/local_llm.py --extra 1/2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUSY_BOUND_S = 900  # no busy loop outlives this, whatever happens to the benchmark


# ------------------------------------------------------------------------------------------------ requests

def job_requests(n: int) -> list[dict]:
    """``n`` requests of the main job's LLM steps, round-robin over briefs, critiques and lessons."""
    from distillery_assets.paths import inputs_dir
    from distillery_assets.poetry import tasks
    from distillery_assets.poetry.raw_poems import load_poems, read_requests
    from distillery_assets.poetry.settings import PoetryConfig

    cfg = PoetryConfig()
    good, _ = load_poems(inputs_dir() / "poetry", "good")
    built = [tasks.briefs(cfg, read_requests(inputs_dir() / "poetry" / "requests.txt"), n),
             tasks.critiques(cfg, good, [], n), tasks.lessons(cfg, n)]
    out: list[dict] = []
    for i in range(n):
        task, rows = built[i % len(built)]
        req = task.prompt(rows[(i // len(built)) % len(rows)])
        out.append({"tag": task.name, "messages": [m.model_dump() for m in req.messages],
                    "temperature": req.temperature, "max_tokens": req.max_tokens, "seed": i})
    return out


# ------------------------------------------------------------------------------------------ child processes

def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _perf(llm) -> tuple[float, int, float, int]:
    import llama_cpp

    p = llama_cpp.llama_perf_context(llm._ctx.ctx)
    return p.t_p_eval_ms / 1000, p.n_p_eval, p.t_eval_ms / 1000, p.n_eval


def _wait_for_go() -> None:
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        raise SystemExit("no GO")


def llm_worker(spec: dict) -> dict:
    """One LLM step's process: load the provider's model, wait for GO, run the requests, report."""
    from distillery_assets.llm import LLMSettings
    from distillery_assets.llm.settings import build_provider
    from distillery_assets.llm.types import ChatMessage

    provider = build_provider(LLMSettings(provider="local", n_threads=spec["n_threads"], cache=False))
    if spec.get("n_threads_batch"):
        provider.n_threads_batch = spec["n_threads_batch"]
    model = provider.model_id(None)
    t = time.perf_counter()
    provider.prepare(model)
    load_s = time.perf_counter() - t
    llm, _ = provider._model(provider._resolve_path(model))
    _wait_for_go()
    p0, cpu0, t0 = _perf(llm), _cpu_s(), time.time()
    completion = done = 0
    for req in spec["requests"]:
        reply = provider.call([ChatMessage(**m) for m in req["messages"]], model=model,
                              temperature=req["temperature"], max_tokens=req["max_tokens"], json_schema=None,
                              stop=None, seed=req["seed"], timeout_s=600)
        completion, done = completion + reply.output_tokens, done + 1
        if time.time() - t0 > spec["budget_s"]:  # a loaded machine: fewer requests, the same rates
            break
    t1, cpu1, p1 = time.time(), _cpu_s(), _perf(llm)
    return {"load_s": load_s, "start": t0, "end": t1, "cpu_s": cpu1 - cpu0, "completion": completion, "done": done,
            "prompt_s": p1[0] - p0[0], "prompt_n": p1[1] - p0[1], "decode_s": p1[2] - p0[2],
            "decode_n": p1[3] - p0[3], "threads": [provider.n_threads, provider.n_threads_batch]}


def tutor_worker(spec: dict) -> dict:
    """The tutor's first steps on the exported GGUFs, streamed: load, first token, tokens/s per step."""
    from distillery_assets.poetry.gguf_chat import GGUFChat
    from distillery_assets.poetry.session import session_prompts
    from distillery_assets.poetry.settings import ModelSettings, PoetryConfig
    from distillery_assets.poetry.text import render

    cfg = PoetryConfig()
    prompts, sampling = session_prompts(cfg), cfg.inference.sampling
    settings = ModelSettings(n_threads=spec["n_threads"], n_threads_batch=spec.get("n_threads_batch"))
    prime = bool(spec.get("prime"))
    t = time.perf_counter()
    educator = GGUFChat(Path(spec["educator"]), settings, system=prompts.educator_system if prime else None)
    poet = GGUFChat(Path(spec["poet"]), settings, system=prompts.poet_system if prime else None)
    load_s = time.perf_counter() - t
    _wait_for_go()
    steps = []

    def ask(chat: GGUFChat, system: str, user: str, params, name: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        p0, start, first, text = _perf(chat.llm), time.perf_counter(), None, ""
        for chunk in chat.llm.create_chat_completion(stream=True, **chat.completion_kwargs(messages, params)):
            piece = chunk["choices"][0]["delta"].get("content") or ""
            if piece and first is None:
                first = time.perf_counter() - start
            text += piece
        wall, p1 = time.perf_counter() - start, _perf(chat.llm)
        decoded = p1[3] - p0[3]
        steps.append({"step": name, "first_token_s": first, "wall_s": wall, "prompt_n": p1[1] - p0[1],
                      "decode_n": decoded, "decode_s": p1[2] - p0[2],
                      "tokens_per_s": (decoded + 1) / (wall - first) if first and wall > first else None})
        return text.strip()

    try:
        for request in spec["tutor_requests"]:
            brief = ask(educator, prompts.educator_system, render(prompts.brief, name="session_brief",
                                                                  request=request), sampling.brief, "brief")
            draft = ask(poet, prompts.poet_system, brief, sampling.draft, "draft")
            ask(educator, prompts.educator_system, render(prompts.critique, name="session_critique", brief=brief,
                                                          history="", draft=draft), sampling.critique, "critique")
    finally:
        educator.close()
        poet.close()
    return {"load_s": load_s, "steps": steps, "primed_tokens": [educator.primed_tokens, poet.primed_tokens]}


def worker_main(spec: dict) -> int:
    result = tutor_worker(spec) if spec["kind"] == "tutor" else llm_worker(spec)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------- the parent

class Busy:
    """One CPU-bound process (``yes > /dev/null``) for the duration of a ``with`` block, at most BUSY_BOUND_S."""

    def __init__(self, on: bool):
        self.on, self.proc = on, None

    def __enter__(self):
        if self.on:
            # a SIGTERM (e.g. from `timeout` around the benchmark) unwinds through __exit__, which stops the loop
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            self.proc = subprocess.Popen(["timeout", str(BUSY_BOUND_S), "yes"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()  # timeout passes SIGTERM on to yes, then exits
            self.proc.wait()


def run_cell(spec: dict, processes: int, busy: bool, script: str = __file__) -> list[dict]:
    """Start ``processes`` workers with ``spec`` (``script --worker SPEC``), let each load its model, start them
    together, collect."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.get("env", {})}
    with Busy(busy):
        procs = [subprocess.Popen([sys.executable, script, "--worker", json.dumps(spec)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) for _ in range(processes)]
        try:
            for p in procs:
                line = p.stdout.readline()
                if line.strip() != "READY":
                    raise RuntimeError(f"worker did not start: {line!r}{p.stdout.read()[-2000:]}")
            for p in procs:
                p.stdin.write("GO\n")
                p.stdin.flush()
            results = []
            for p in procs:
                out, _ = p.communicate(timeout=BUSY_BOUND_S)
                found = [line for line in out.splitlines() if line.startswith("RESULT ")]
                if p.returncode != 0 or not found:
                    raise RuntimeError(f"worker failed ({p.returncode}): {out[-2000:]}")
                results.append(json.loads(found[-1][len("RESULT "):]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    return results


def summarise(results: list[dict]) -> dict:
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    completion = sum(r["completion"] for r in results)
    return {
        "processes": len(results), "wall_s": wall, "completion": completion,
        "prompt_tps": sum(r["prompt_n"] / max(1e-9, r["prompt_s"]) for r in results),
        "decode_tps": sum(r["decode_n"] / max(1e-9, r["decode_s"]) for r in results),
        "gen_tps": completion / max(1e-9, wall),
        "cpu_per_token": sum(r["cpu_s"] for r in results) / max(1, completion),
        "load_s": max(r["load_s"] for r in results), "threads": results[0]["threads"],
        "requests": sum(r["done"] for r in results),
    }


def llama_build(env: dict) -> str:
    """The llama.cpp build a worker with ``env`` loads: where from, and the CPU features it was compiled for."""
    code = ("import llama_cpp, pathlib; info = llama_cpp.llama_print_system_info().decode(); "
            "print(pathlib.Path(llama_cpp.__file__).parent.parent, '|', "
            "' '.join(f.split('=')[0].split(':')[-1].strip() for f in info.split('|') if f.strip().endswith('= 1')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **env})
    if out.returncode:
        return f"failed to load: {(out.stderr.strip().splitlines() or ['?'])[-1]}"
    return out.stdout.strip()


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def find_tutor_models(gguf_dir: Path | None) -> tuple[Path, Path] | None:
    from distillery_assets.poetry.tutor import latest_gguf

    try:
        return latest_gguf("educator", gguf_dir), latest_gguf("poet", gguf_dir)
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=3, help="requests per process and cell (default 3)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds after which a process starts no further request (default 30; at least one "
                             "request each)")
    parser.add_argument("--extra", nargs="*", default=[], metavar="D/B",
                        help="more policies: D decode threads, B batch threads (e.g. 1/2); '+passive' adds "
                             "OMP_WAIT_POLICY=passive (llama.cpp's workers sleep instead of spinning)")
    parser.add_argument("--llama", nargs="*", default=[], metavar="NAME=DIR",
                        help="another llama-cpp-python build, installed with 'pip install --target DIR': the new "
                             "policy again with DIR first on the workers' PYTHONPATH (e.g. a build with other "
                             "CMAKE_ARGS, compared in the same run)")
    parser.add_argument("--no-tutor", dest="tutor", action="store_false", help="skip the tutor figures")
    parser.add_argument("--tutor-requests", type=int, default=1, help="tutor sessions' first steps per cell")
    parser.add_argument("--gguf-dir", type=Path, help="where the exported GGUFs are (default: data_dir())")
    parser.add_argument("--tutor-base", action="store_true",
                        help="without exported GGUFs, time the tutor on the bundled base SmolLM2-135M (same "
                             "architecture and size as the fine-tunes; labelled as a stand-in)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))

    from distillery_assets.threads import policy

    new = policy()
    cpus = os.cpu_count() or 1
    policies = {"old": {"n_threads": cpus, "n_threads_batch": None, "jobs": 1},
                "new": {"n_threads": new.decode, "n_threads_batch": new.batch, "jobs": new.slots}}
    for extra in args.extra:
        threads, _, flag = extra.partition("+")
        d, _, b = threads.partition("/")
        policies[extra] = {"n_threads": int(d), "n_threads_batch": int(b or d), "jobs": new.slots,
                           "env": {"OMP_WAIT_POLICY": "passive"} if flag == "passive" else {}}
    for build in args.llama:
        label, _, where = build.partition("=")
        path = os.pathsep.join(p for p in (str(Path(where).resolve()), os.environ.get("PYTHONPATH", "")) if p)
        policies[label] = {"n_threads": new.decode, "n_threads_batch": new.batch, "jobs": new.slots,
                           "env": {"PYTHONPATH": path}}
    requests = job_requests(args.requests)
    start = time.perf_counter()
    print(f"machine: {new.cores} cores for this process (os.cpu_count() {cpus}), {new.slots} local_model slots; "
          f"new policy: decode {new.decode}, batch {new.batch}, torch {new.torch} [{new.source}]")
    for name, pol in policies.items():
        if name == "new" or pol.get("env", {}).get("PYTHONPATH"):
            print(f"llama.cpp build of {name!r}: {llama_build(pol.get('env', {}))}")
    print(f"load average at start: {load_average()} (a shared machine is not idle: 'idle' = no busy loop of ours)")
    print(f"requests per process: {len(requests)} ({', '.join(sorted({r['tag'] for r in requests}))})\n")

    rows: dict[tuple[str, str, str], dict] = {}
    header = (f"{'policy':<7} {'threads d/b':<11} {'condition':<9} {'mode':<10} {'prompt t/s':>10} {'decode t/s':>10} "
              f"{'gen t/s':>8} {'CPU s/tok':>9} {'wall s':>7} {'reqs':>4}  load avg")
    print(header)
    print("-" * len(header))
    for condition in ("idle", "busy"):
        for name, pol in policies.items():
            modes = [("single", 1)] + ([("job", pol["jobs"])] if pol["jobs"] > 1 else [])
            for mode, processes in modes:
                spec = {"kind": "llm", "n_threads": pol["n_threads"], "n_threads_batch": pol["n_threads_batch"],
                        "requests": requests, "budget_s": args.budget, "env": pol.get("env", {})}
                s = summarise(run_cell(spec, processes, condition == "busy"))
                rows[(name, condition, mode)] = s
                if pol["jobs"] == 1:  # the pool runs one step at a time: the job's concurrency is a single step
                    rows[(name, condition, "job")] = s
                label = mode if processes == 1 else f"job x{processes}"
                if pol["jobs"] == 1:
                    label = "single+job"
                d, b = s["threads"]
                print(f"{name[:7]:<7} {f'{d}/{b}':<11} {condition:<9} {label:<10} {s['prompt_tps']:>10.0f} "
                      f"{s['decode_tps']:>10.1f} {s['gen_tps']:>8.1f} {s['cpu_per_token']:>9.4f} "
                      f"{s['wall_s']:>7.1f} {s['requests']:>4}  {load_average()}", flush=True)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "n/a"

    print("\nratios (same run):")
    for name in policies:
        idle_best = max(rows[(name, "idle", m)]["decode_tps"] / rows[(name, "idle", m)]["processes"]
                        for m in ("single", "job"))
        busy = rows[(name, "busy", "single")]
        print(f"  {name}: decode beside a busy process / best idle decode (one process): "
              f"{ratio(busy['decode_tps'], idle_best)} (goal >= 0.85); CPU s per token busy / idle: "
              f"{ratio(busy['cpu_per_token'], rows[(name, 'idle', 'single')]['cpu_per_token'])} (goal <= 1.2)")
    for condition in ("idle", "busy"):
        for name in [n for n in policies if n != "old"]:
            job, old = rows[(name, condition, "job")], rows[("old", condition, "job")]
            print(f"  {condition}: {name} job / old job: generated tokens/s {ratio(job['gen_tps'], old['gen_tps'])}, "
                  f"decode tokens/s {ratio(job['decode_tps'], old['decode_tps'])}, prompt tokens/s "
                  f"{ratio(job['prompt_tps'], old['prompt_tps'])}"
                  + (" (goal: LLM steps together >= 1.8x today's idle throughput)" if condition == "idle" else ""))
    new_busy_job, old_idle_job = rows[("new", "busy", "job")], rows[("old", "idle", "job")]
    print(f"  new job beside a busy process / old job idle: generated tokens/s "
          f"{ratio(new_busy_job['gen_tps'], old_idle_job['gen_tps'])}")

    tutor_rows = {}
    if args.tutor:
        print()
        models = find_tutor_models(args.gguf_dir)
        if models is None and args.tutor_base:
            from distillery_assets.embedded import smollm2_gguf_path

            models = (smollm2_gguf_path(), smollm2_gguf_path())
            print("tutor: no exported GGUFs; the bundled base SmolLM2-135M stands in for both (--tutor-base)")
        if models is None:
            print(f"tutor: skipped, no exported *educator*.gguf / *poet*.gguf under "
                  f"{args.gguf_dir or 'data_dir()'} (run scripts/demo.sh, or pass --gguf-dir)")
        else:
            from distillery_assets.paths import inputs_dir
            from distillery_assets.poetry.raw_poems import read_requests

            tutor_requests = read_requests(inputs_dir() / "poetry" / "requests.txt")[: args.tutor_requests]
            print(f"tutor on {models[0].name} + {models[1].name} (targets: load < 30 s, first token < 100 ms, "
                  f">= 20 tokens/s)")
            print(f"{'policy':<7} {'threads d/b':<11} {'condition':<9} {'load s':>7} {'step':<9} {'prompt tok':>10} "
                  f"{'first tok ms':>12} {'tok/s':>7}")
            old_tutor = {"n_threads": 2, "n_threads_batch": None}  # inference.yaml's n_threads: 2 before issue 26
            for condition in ("idle", "busy"):
                builds = [(label, policies[label]) for label, _, _ in (b.partition("=") for b in args.llama)]
                for name, pol in [("old", old_tutor), ("new", policies["new"])] + builds:
                    spec = {"kind": "tutor", "n_threads": pol["n_threads"], "n_threads_batch": pol["n_threads_batch"],
                            "env": pol.get("env", {}),
                            "educator": str(models[0]), "poet": str(models[1]), "tutor_requests": tutor_requests,
                            "prime": name != "old"}  # the new GGUFChat evaluates each system prompt at load
                    r = run_cell(spec, 1, condition == "busy")[0]
                    tutor_rows[(name, condition)] = r
                    threads = f"{pol['n_threads']}/{pol['n_threads_batch'] or cpus}"
                    for i, step in enumerate(r["steps"]):
                        first = step["first_token_s"]
                        print(f"{name:<7} {threads:<11} "
                              f"{condition:<9} {r['load_s'] if i == 0 else float('nan'):>7.2f} {step['step']:<9} "
                              f"{step['prompt_n']:>10} {1000 * first if first else float('nan'):>12.0f} "
                              f"{step['tokens_per_s'] or float('nan'):>7.1f}", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s; load average at the end: {load_average()})")
    if args.json:
        args.json.write_text(json.dumps({
            "policies": policies, "cells": {"/".join(k): v for k, v in rows.items()},
            "tutor": {"/".join(k): v for k, v in tutor_rows.items()}}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
