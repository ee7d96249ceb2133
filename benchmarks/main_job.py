"""The main job (``scripts/demo.sh``) from an empty data folder: old and new thread policy, idle and beside a busy
process, each with its wall time and CPU time.

Each run gets a fresh, empty ``DISTILLERY_DATA_DIR`` (no LLM cache, no earlier outputs; the shipped inputs and
config are read from the repo), and runs ``bash scripts/demo.sh`` to the end: the Dagster materialization of
``*poet_gguf,*educator_gguf``, the exports' report and one tutor session. CPU time is the user + system time
of every process the demo started (``getrusage(RUSAGE_CHILDREN)``: Dagster's step processes included).

* ``old``: the setting before issue 26: ``DISTILLERY_THREADS=<os.cpu_count()>`` (llama.cpp decode and batch
  threads and torch threads = the CPU count), ``DISTILLERY_MODEL_SLOTS=1`` (one model step at a time) and
  Dagster's executor defaults (``spawn``: every step imports the code location again; as many step processes
  at once as CPUs);
* ``dagster``: the new thread policy with Dagster's executor defaults (isolates what the run defaults save);
* ``share``: as ``new`` but each model step keeps its fixed share of the cores (``DISTILLERY_THREADS_ADAPT=0``:
  no spare core taken; isolates what ``threads.SpareCores`` saves);
* ``nopreload``: as ``new`` but the forkserver preloads only ``dagster`` (what Dagster itself preloads for a job
  loaded with ``-m``; isolates what ``assets/dead_runs.py``'s ``PRELOAD`` saves: each step imported the code
  location again);
* ``new``: no variable: ``distillery_assets/threads.py`` decides (``python -m distillery_assets.threads``: each
  step's share, plus a core nobody else uses), and this project's run defaults (``assets/dead_runs.py``: steps
  forked from a forkserver, the model slots plus two step processes at once). The poet chain's
  ``dagster/priority`` is part of the definitions, so it applies to every variant.

Dagster's defaults go to the demo's ``dagster asset materialize`` as a run config file (``DEMO_RUN_CONFIG``,
read by ``scripts/demo.sh``). With a forkserver the step processes are the forkserver's children, and the
forkserver may outlive the Dagster process that started it; this process makes itself their subreaper
(``PR_SET_CHILD_SUBREAPER``) and reaps every orphan, so their CPU time is counted as well.

``busy``: one ``yes > /dev/null`` runs for the whole demo (started and killed here, bounded by ``timeout``).
The runs go one after another in the order given (default: old idle, new idle, old busy, new busy: about
35 minutes on an idle 2-core machine, most of it the old policy beside the busy process). Every run's output is
kept in ``--out`` (default ``data/benchmarks/main_job/``); the summary prints the ratios the issue names.

    python benchmarks/main_job.py
    python benchmarks/main_job.py --runs new:idle new:busy      # only the new policy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUSY_BOUND_S = 3 * 3600


POLICIES = ("old", "dagster", "share", "nopreload", "new")


def dagster_defaults_config() -> str:
    """A run config with Dagster's own executor defaults (what ``assets/dead_runs.py`` changes)."""
    return ("execution:\n  config:\n    multiprocess:\n"
            f"      max_concurrent: {os.cpu_count() or 1}\n      start_method:\n        spawn: {{}}\n")


def policy_env(name: str, out: Path) -> dict[str, str]:
    from distillery_assets.threads import ENV_ADAPT, ENV_SLOTS, ENV_THREADS, ENV_THREADS_BATCH

    env = {k: v for k, v in os.environ.items()
           if k not in (ENV_THREADS, ENV_THREADS_BATCH, ENV_SLOTS, ENV_ADAPT, "DEMO_RUN_CONFIG")}
    env.pop("DISTILLERY_LLM_N_THREADS", None)
    if name == "old":
        env.update({ENV_THREADS: str(os.cpu_count() or 1), ENV_SLOTS: "1"})
    if name == "share":
        env[ENV_ADAPT] = "0"
    if name in ("old", "dagster"):
        config = out / "dagster-defaults.yaml"
        config.write_text(dagster_defaults_config(), encoding="utf-8")
        env["DEMO_RUN_CONFIG"] = str(config)
    if name == "nopreload":
        config = out / "forkserver-dagster-preload.yaml"
        config.write_text("execution:\n  config:\n    multiprocess:\n      start_method:\n        forkserver:\n"
                          "          preload_modules: [dagster]\n", encoding="utf-8")
        env["DEMO_RUN_CONFIG"] = str(config)
    return env


def become_subreaper() -> bool:
    """Orphaned descendants (a forkserver that outlives its run, and its steps) are re-parented to this process
    instead of init, so :func:`reap_orphans` can collect them and their CPU time lands in RUSAGE_CHILDREN."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans(wait_s: float = 30.0) -> int:
    """Wait for every remaining child (up to ``wait_s``); returns how many were reaped."""
    reaped, deadline = 0, time.monotonic() + wait_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
        elif time.monotonic() > deadline:
            return reaped
        else:
            time.sleep(0.2)


def cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_demo(policy: str, busy: bool, out: Path, keep: bool = False, llama: Path | None = None) -> dict:
    """``policy`` may name a build (``new@avx2``): ``llama`` is then that llama-cpp-python build's folder, put first
    on the PYTHONPATH of the demo and so of every step process."""
    data = Path(tempfile.mkdtemp(prefix=f"main-job-{policy.replace('@', '-')}-"))
    env = {**policy_env(policy.partition("@")[0], out), "DISTILLERY_DATA_DIR": str(data),
           "DAGSTER_TELEMETRY_DISABLED": "1"}
    if llama is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(llama), env.get("PYTHONPATH", "")) if p)
    log = out / f"{policy.replace('@', '-')}-{'busy' if busy else 'idle'}.log"
    hog = subprocess.Popen(["timeout", str(BUSY_BOUND_S), "yes"], stdout=subprocess.DEVNULL) if busy else None
    cpu, wall = cpu_of_children(), time.perf_counter()
    try:
        with log.open("w", encoding="utf-8") as fh:
            rc = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT).returncode
    finally:
        wall = time.perf_counter() - wall
        hog_cpu = 0.0
        if hog is not None:
            hog.terminate()  # timeout passes it on to yes
            _, _, usage = os.wait4(hog.pid, 0)  # the busy loop's own CPU, not the demo's
            hog.returncode, hog_cpu = -15, usage.ru_utime + usage.ru_stime
        reap_orphans()
        cpu = cpu_of_children() - cpu - hog_cpu
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
    text = log.read_text(encoding="utf-8", errors="replace")
    materialized = re.search(r"=== materialized in (\d+) s", text)
    return {"policy": policy, "condition": "busy" if busy else "idle", "rc": rc, "wall_s": wall, "cpu_s": cpu,
            "materialize_s": int(materialized.group(1)) if materialized else None, "log": str(log),
            "data_dir": str(data) if keep else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["old:idle", "new:idle", "old:busy", "new:busy"],
                        help=f"policy[@build]:condition, in order (policy {'|'.join(POLICIES)}, condition "
                             "idle|busy, build a name given to --llama)")
    parser.add_argument("--llama", nargs="*", default=[], metavar="NAME=DIR",
                        help="another llama-cpp-python build, installed with 'pip install --target DIR', for runs "
                             "named policy@NAME (e.g. --llama avx2=/tmp/avx2 --runs old@avx2:idle new:idle: the "
                             "old policy on the build setup.sh made before it named the CPU's extensions)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "benchmarks" / "main_job")
    parser.add_argument("--keep", action="store_true",
                        help="keep each run's data folder (its GGUFs for benchmarks/tutor.py --gguf-dir)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from distillery_assets.threads import policy

    if not become_subreaper():
        print("warning: not a subreaper here; CPU time of step processes that outlive their run is not counted")
    p = policy()
    print(f"new policy here: {p.slots} local_model slots; decode {p.decode}, batch {p.batch}, torch {p.torch} "
          f"[{p.source}]; old: {os.cpu_count()} threads everywhere, 1 slot")
    builds = {label: Path(where).resolve() for label, _, where in (b.partition("=") for b in args.llama)}
    for label, where in builds.items():
        print(f"build {label!r}: {where}")
    results: dict[tuple[str, str], dict] = {}
    for run in args.runs:
        name, _, condition = run.partition(":")
        base, _, build = name.partition("@")
        if base not in POLICIES or condition not in ("idle", "busy") or (build and build not in builds):
            parser.error(f"{run!r}: policy[@build]:condition, policy {'|'.join(POLICIES)}, condition idle|busy, "
                         f"build one of {sorted(builds) or 'none (--llama NAME=DIR)'}")
        print(f"{name} {condition}: running demo.sh from an empty data folder ...", flush=True)
        r = run_demo(name, condition == "busy", args.out, keep=args.keep, llama=builds.get(build))
        results[(name, condition)] = r
        status = "ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})"
        print(f"  {status}: wall {r['wall_s']:.0f} s, CPU "
              f"{r['cpu_s']:.0f} s, materialize {r['materialize_s']} s; log {r['log']}"
              + (f"; data {r['data_dir']}" if r["data_dir"] else ""), flush=True)

    print(f"\n{'policy':<11} {'condition':<9} {'wall s':>7} {'CPU s':>7} {'CPU/wall':>8}  exit")
    for (name, condition), r in results.items():
        print(f"{name:<11} {condition:<9} {r['wall_s']:>7.0f} {r['cpu_s']:>7.0f} {r['cpu_s'] / r['wall_s']:>8.2f}  "
              f"{r['rc']}")

    def get(n, c):
        return results.get((n, c))

    for base in [n for n, _ in results if n != "new" and _ == "idle"]:
        if get(base, "idle") and get("new", "idle"):
            print(f"new idle / {base} idle: wall {get('new', 'idle')['wall_s'] / get(base, 'idle')['wall_s']:.2f}"
                  + (" (goal <= 0.5)" if base.startswith("old") else "")
                  + f", CPU {get('new', 'idle')['cpu_s'] / get(base, 'idle')['cpu_s']:.2f}")
    for n in dict.fromkeys(n for n, _ in results):
        if get(n, "idle") and get(n, "busy"):
            print(f"{n}: busy / idle wall {get(n, 'busy')['wall_s'] / get(n, 'idle')['wall_s']:.2f}"
                  + (" (goal <= 1.5)" if n == "new" else "")
                  + f", CPU {get(n, 'busy')['cpu_s'] / get(n, 'idle')['cpu_s']:.2f}")
    (args.out / "summary.json").write_text(json.dumps(
        [r for r in results.values()], indent=1), encoding="utf-8")
    return 0 if all(r["rc"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
