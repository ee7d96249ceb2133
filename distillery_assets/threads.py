"""How many CPU threads each model in this process uses, and how many model steps run at once: one place.

Every in-process llama.cpp model (the local LLM provider, the GGUF checks and perplexity of an export, thyme's
GGUF check, the tutor) takes its ``n_threads`` / ``n_threads_batch`` from :func:`llama_threads`, and every
torch step its ``torch.set_num_threads`` from :func:`torch_threads` (``training.loop.seed_torch``, the
exports, the filter scorer). The ``local_model`` pool limit (``assets/pools.py``) is :func:`model_slots`.

The rule (``benchmarks/local_llm.py`` measures it against the old one, idle and beside a busy process):

* **cores** are the CPUs this process may run on: its affinity mask (``os.sched_getaffinity``), capped by
  the cgroup's CPU quota (``cpu.max``, or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); never
  ``os.cpu_count()``, which counts the host's CPUs.
* **slots** (model steps side by side, the ``local_model`` pool limit): one per core, as long as each gets
  :data:`SLOT_MEMORY_BYTES` of the machine's memory (MemTotal, capped by the cgroup's memory limit).
* each model step's **share** is ``cores // slots`` (1 on two cores);
* **decode** (``n_threads``): one thread. llama.cpp's workers spin at every barrier, so a second decode thread
  that shares its core with anything else makes every token wait for a descheduled thread (the issue 26
  figures: 131 tok/s with one thread idle and beside a busy process; 146 with two idle, 36 beside one busy
  process). A bigger share keeps one core in reserve for whatever else runs: ``max(1, share - 1)``.
* **batch** (``n_threads_batch``, the prompt and perplexity scoring): the share. Prompt work is long
  matrix products and does gain from a free core, but on two cores the other core belongs to the other slot.
* **torch**: the share; torch's OpenMP workers spin like llama.cpp's.

Measured with ``benchmarks/local_llm.py`` on 2 cores kept at a load average of 4-8 by other jobs (README): the
main job's LLM requests ran 8x (no busy loop of ours) and 17.6x (beside one) as many generated tokens/s under
this policy with two steps side by side as under the old one (2 threads each, one step at a time), at 0.02 CPU
seconds per token against 0.14-0.29; one decode thread with two prompt threads lost the prompt speed under load.
Two threads with ``OMP_WAIT_POLICY=passive`` (llama.cpp's OpenMP workers sleep instead of spinning) held up as
well under load but are unmeasured idle (``--extra 2/2+passive`` measures them).

Override with one variable: ``DISTILLERY_THREADS=N`` sets all of them to N (decode, batch, torch);
``DISTILLERY_THREADS_BATCH=N`` then sets the prompt threads alone; ``DISTILLERY_MODEL_SLOTS=N`` the number
of model steps at once (and so the share). An explicit per-call value (``LLMSettings.n_threads``,
``DISTILLERY_LLM_N_THREADS``, a training config's ``threads``, inference.yaml's ``n_threads``) still wins for
its own use.

**A core nobody uses** (:class:`SpareCores`): the share is what a step may count on; a step that runs long
(a training loop, an export, an LLM step, the tutor) re-checks every :data:`ADAPT_INTERVAL_S` seconds how busy
the rest of the machine is (the busy time of this process's CPUs in ``/proc/stat``, less this process's own CPU
time) and takes each core the others leave at least :data:`FREE_FRACTION` idle: torch's threads between
optimizer steps, llama.cpp's prompt threads (``n_threads_batch``) before each request or phase. Decode keeps
``max(1, threads - 1)``. A lone step on two cores so gets both (a ThymeLM step 2.7 s with one thread, ~1.1 s
with two) and drops back to its share within one interval of anything else starting. Off with
``DISTILLERY_THREADS_ADAPT=0``; never with ``DISTILLERY_THREADS``, an explicit per-call count, or a cgroup CPU
quota (whose use ``/proc/stat`` does not show).

``python -m distillery_assets.threads`` prints the policy of this machine and where each number comes from.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_THREADS = "DISTILLERY_THREADS"
ENV_THREADS_BATCH = "DISTILLERY_THREADS_BATCH"
ENV_SLOTS = "DISTILLERY_MODEL_SLOTS"
ENV_ADAPT = "DISTILLERY_THREADS_ADAPT"

ADAPT_INTERVAL_S = 2.0
"""How often a long step re-checks whether a core is free (the longest a step keeps a core another process
has just started to want)."""
FREE_FRACTION = 0.7
"""A core beyond the step's share is taken when the rest of the machine left at least this much of it idle
over the last interval (the run's own coordinator and daemons use a few percent of one)."""

log = logging.getLogger(__name__)

SLOT_MEMORY_BYTES = 3 * 1024**3
"""Memory one ``local_model`` step may need: a LoRA fine-tune of the 135M base in float32 with its optimizer
and activations, or an export's merge + f16 conversion, peaks near 2 GiB; one more GiB for the step's
Python/Dagster process and the page cache it reads the weights through."""

CGROUP_ROOT = Path("/sys/fs/cgroup")


# ----------------------------------------------------------------------------------- what the machine has

def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_dirs(controller: str, root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> list[Path]:
    """The folders of this process's cgroup for ``controller`` (v1) or the unified hierarchy (v2), deepest
    first, then the root: a limit anywhere up the tree applies."""
    text = proc_cgroup if proc_cgroup is not None else (_read(Path("/proc/self/cgroup")) or "")
    found: list[Path] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        names = controllers.split(",") if controllers else []
        if controller in names:
            base = root / controller
        elif not controllers:  # v2: "0::/path"
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
        else:
            continue
        rel_path = Path(rel.lstrip("/"))
        chain = [base / rel_path]
        while rel_path != Path("."):
            rel_path = rel_path.parent
            chain.append(base / rel_path)
        found += [d for d in chain if d.is_dir() and d not in found]
    return found


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. 1.5), or None when there is none."""
    limits = []
    for d in _cgroup_dirs("cpu", root, proc_cgroup):
        v2 = _read(d / "cpu.max")
        if v2:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period:
                limits.append(int(quota) / int(period))
            continue
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota and period and int(quota) > 0 and int(period) > 0:
            limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def available_cores(affinity: set[int] | None = None, quota: float | None | bool = False) -> int:
    """CPUs this process may run on: the affinity mask, capped by the cgroup quota (rounded up), at least 1.
    ``affinity`` and ``quota`` are for tests (``quota=False``: read the cgroup)."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            affinity = set(range(os.cpu_count() or 1))
    cores = max(1, len(affinity))
    limit = cgroup_cpu_limit() if quota is False else quota
    if limit:
        cores = min(cores, max(1, math.ceil(limit - 1e-9)))
    return cores


def memory_bytes(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None, meminfo: str | None = None) -> int | None:
    """The machine's memory (MemTotal), capped by this process's cgroup memory limit; None if unknown."""
    text = meminfo if meminfo is not None else (_read(Path("/proc/meminfo")) or "")
    total = None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    limits = [total] if total else []
    for d in _cgroup_dirs("memory", root, proc_cgroup):
        for name in ("memory.max", "memory.limit_in_bytes"):
            value = _read(d / name)
            if value and value.isdigit() and int(value) < 2**60:  # v1's "no limit" is a huge number
                limits.append(int(value))
    return min(limits) if limits else None


# ----------------------------------------------------------------------------------------------- the policy

def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: a whole number of threads, at least 1") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r}: a whole number of threads, at least 1")
    return value


def slots_for(cores: int, memory: int | None) -> int:
    """Model steps at once on a machine with ``cores`` and ``memory`` bytes: one per core, as memory allows."""
    by_memory = cores if memory is None else max(1, memory // SLOT_MEMORY_BYTES)
    return max(1, min(cores, by_memory))


@dataclass(frozen=True)
class ThreadPolicy:
    cores: int
    slots: int
    decode: int  # llama.cpp n_threads
    batch: int  # llama.cpp n_threads_batch (prompt, perplexity scoring)
    torch: int  # torch.set_num_threads
    source: str  # where the numbers come from, for logs and the CLI

    @property
    def share(self) -> int:
        return max(1, self.cores // self.slots)

    def llama_kwargs(self) -> dict[str, int]:
        return {"n_threads": self.decode, "n_threads_batch": self.batch}


def policy(environ: Mapping[str, str] | None = None, *, cores: int | None = None,
           memory: int | None | bool = False) -> ThreadPolicy:
    """The thread policy of this process (``environ``, ``cores`` and ``memory`` are for tests;
    ``memory=False``: read it)."""
    env = os.environ if environ is None else environ
    cores = available_cores() if cores is None else max(1, int(cores))
    mem = memory_bytes() if memory is False else memory
    slots_env = _env_int(env, ENV_SLOTS)
    slots = slots_env or slots_for(cores, mem)
    share = max(1, cores // slots)
    source = [f"{cores} core{'s' if cores != 1 else ''}",
              f"{slots} slot{'s' if slots != 1 else ''}" + (f" ({ENV_SLOTS})" if slots_env else "")]
    threads = _env_int(env, ENV_THREADS)
    if threads:
        decode = batch = torch = threads
        source.append(ENV_THREADS)
    else:
        decode, batch, torch = max(1, share - 1), share, share
    batch_env = _env_int(env, ENV_THREADS_BATCH)
    if batch_env:
        batch = batch_env
        source.append(ENV_THREADS_BATCH)
    return ThreadPolicy(cores=cores, slots=slots, decode=decode, batch=batch, torch=torch, source=", ".join(source))


def llama_threads(n_threads: int | None = None, n_threads_batch: int | None = None) -> dict[str, int]:
    """``n_threads`` and ``n_threads_batch`` for a ``llama_cpp.Llama(...)``: the policy's, unless the caller
    has its own (an explicit ``n_threads`` alone sets both, as llama.cpp's own default would)."""
    if n_threads:
        return {"n_threads": int(n_threads), "n_threads_batch": int(n_threads_batch or n_threads)}
    p = policy()
    return {"n_threads": p.decode, "n_threads_batch": int(n_threads_batch or p.batch)}


def torch_threads(threads: int | None = None) -> int:
    """Threads for torch's CPU work: ``threads`` when given, else the policy's."""
    return int(threads) if threads else policy().torch


def apply_torch_threads(threads: int | None = None) -> int:
    """``torch.set_num_threads`` to :func:`torch_threads` (when it differs); returns the count."""
    import torch

    n = torch_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def model_slots() -> int:
    """The ``local_model`` pool limit this machine gets (``DISTILLERY_MODEL_SLOTS`` or cores and memory)."""
    return policy().slots


# ------------------------------------------------------------------------------------- a core nobody uses

def _busy_seconds(cpus: set[int] | None, stat_text: str | None = None) -> float | None:
    """Busy CPU seconds since boot of the CPUs in ``cpus`` (all when None), from ``/proc/stat``'s per-CPU lines
    (user, nice, system, irq, softirq, steal; idle and iowait are not busy); None where it cannot be read."""
    text = stat_text if stat_text is not None else _read(Path("/proc/stat"))
    if not text:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    ticks, seen = 0, False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu = int(name[3:])
            fields = [int(x) for x in rest.split()]
        except ValueError:
            continue
        if cpus is not None and cpu not in cpus:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        ticks += user + nice + system + irq + softirq + steal
        seen = True
    return ticks / hz if seen else None


class CoreMeter:
    """How many cores the rest of the machine kept busy since the last reading: the busy seconds of the CPUs
    this process may run on, less this process's own CPU seconds (all its threads), over the wall time between
    readings. ``busy``, ``own`` and ``clock`` are for tests."""

    def __init__(self, cpus: set[int] | None = None, *, busy: Callable[[], float | None] | None = None,
                 own: Callable[[], float] = time.process_time, clock: Callable[[], float] = time.monotonic):
        if cpus is None and busy is None and hasattr(os, "sched_getaffinity"):
            cpus = os.sched_getaffinity(0)
        self._busy = busy or (lambda: _busy_seconds(cpus))
        self._own, self._clock = own, clock
        self._last = self._reading()

    def _reading(self) -> tuple[float, float | None, float]:
        return self._clock(), self._busy(), self._own()

    def others(self) -> float | None:
        """Cores the others used since the last call (or since the meter was made); None if unreadable or
        under 0.2 s have passed."""
        now = self._reading()
        (t0, b0, o0), (t1, b1, o1) = self._last, now
        if b0 is None or b1 is None or t1 - t0 < 0.2:
            if b0 is None:
                self._last = now
            return None
        self._last = now
        return max(0.0, ((b1 - b0) - (o1 - o0)) / (t1 - t0))


def spare_threads(share: int, cores: int, others: float) -> int:
    """Threads for a step entitled to ``share`` cores when the others used ``others`` cores: the share, plus
    each further core they left at least :data:`FREE_FRACTION` idle."""
    spare = math.floor(cores - share - others + (1 - FREE_FRACTION) + 1e-9)
    return share + max(0, min(cores - share, spare))


class SpareCores:
    """The threads one long step uses, re-decided at most every ``interval`` seconds: its share of the cores,
    plus every core the rest of the machine leaves free (:func:`spare_threads`). ``fixed``: always ``share``
    (adaptation off, an explicit count, or nothing to gain)."""

    def __init__(self, share: int, cores: int, *, fixed: bool = False, why: str = "",
                 meter: CoreMeter | None = None, interval: float = ADAPT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.share, self.cores, self.fixed, self.why = int(share), int(cores), bool(fixed), why
        self.threads = self.share
        self.others: float | None = None
        self._meter = None if self.fixed else (meter or CoreMeter())
        self._interval, self._clock = float(interval), clock
        self._due = clock() + min(self._interval, 0.5)  # the first decision early: a step's first phase counts
        self.changes = 0
        self.thread_seconds: dict[int, float] = {}
        self._since = clock()

    def check(self, *, now_if_unmeasured: bool = False) -> tuple[int, bool]:
        """The thread count now, and whether it changed since the last call (re-measured once per interval).
        ``now_if_unmeasured``: before the first reading, measure now rather than wait for it to fall due (the
        meter still needs 0.2 s since it was made)."""
        if self.fixed:
            return self.threads, False
        now = self._clock()
        if now < self._due and not (now_if_unmeasured and self.others is None):
            return self.threads, False
        self._due = now + self._interval
        others = self._meter.others()
        if others is None:
            return self.threads, False
        self.others = others
        new = spare_threads(self.share, self.cores, others)
        self.thread_seconds[self.threads] = self.thread_seconds.get(self.threads, 0.0) + now - self._since
        self._since = now
        changed = new != self.threads
        if changed:
            self.changes += 1
            log.info("threads %d -> %d (the rest of the machine used %.2f of %d cores over the last %.0f s)",
                     self.threads, new, others, self.cores, self._interval)
        self.threads = new
        return new, changed

    def summary(self) -> dict[str, object]:
        """For metadata and history: the mode, the seconds spent at each thread count, the changes."""
        seconds = dict(self.thread_seconds)
        seconds[self.threads] = seconds.get(self.threads, 0.0) + self._clock() - self._since
        return {"adaptive": not self.fixed, "why_fixed": self.why or None, "share": self.share,
                "thread_seconds": {str(k): round(v, 1) for k, v in sorted(seconds.items())}, "changes": self.changes}


def spare_cores(threads: int | None = None, environ: Mapping[str, str] | None = None, *,
                cores: int | None = None, meter: CoreMeter | None = None) -> SpareCores:
    """The :class:`SpareCores` of a step in this process: fixed at ``threads`` when the caller has its own,
    else the policy's share (``torch``), adapting unless ``DISTILLERY_THREADS`` is set,
    ``DISTILLERY_THREADS_ADAPT=0``, a cgroup CPU quota applies, or the share is every core."""
    env = os.environ if environ is None else environ
    p = policy(env, cores=cores)
    if threads:
        return SpareCores(int(threads), p.cores, fixed=True, why="an explicit thread count")
    why = ""
    if _env_int(env, ENV_THREADS):
        why = ENV_THREADS
    elif _env_int(env, ENV_THREADS_BATCH):
        why = ENV_THREADS_BATCH
    elif (env.get(ENV_ADAPT) or "").strip().lower() in ("0", "false", "no", "off"):
        why = f"{ENV_ADAPT}=0"
    elif cores is None and cgroup_cpu_limit() is not None:
        why = "a cgroup CPU quota"
    elif p.torch >= p.cores:
        why = "the share is every core"
    elif cores is None and meter is None and _busy_seconds(None) is None:
        why = "/proc/stat is not readable"
    return SpareCores(p.torch, p.cores, fixed=bool(why), why=why, meter=meter, interval=ADAPT_INTERVAL_S)


def llama_batch_decode(threads: int) -> tuple[int, int]:
    """(``n_threads``, ``n_threads_batch``) for llama.cpp when a step may use ``threads``: decode one fewer
    (its workers spin at every token's barrier), prompt work all of them."""
    return max(1, threads - 1), threads


def set_llama_threads(llm, threads: int) -> None:
    """Point a loaded ``llama_cpp.Llama`` at :func:`llama_batch_decode`'s counts (its context keeps them
    until the next call)."""
    set_llama_thread_counts(llm, *llama_batch_decode(threads))


def set_llama_thread_counts(llm, n: int, nb: int) -> None:
    """Set a loaded ``llama_cpp.Llama``'s decode (``n``) and prompt (``nb``) threads as they are."""
    ctx = getattr(llm, "_ctx", None)
    if ctx is not None and hasattr(ctx, "set_n_threads"):
        ctx.set_n_threads(n, nb)
        llm.n_threads, llm.n_threads_batch = n, nb
        llm.context_params.n_threads, llm.context_params.n_threads_batch = n, nb


def main() -> int:
    p = policy()
    mem = memory_bytes()
    quota = cgroup_cpu_limit()
    print(f"cores {p.cores} (affinity {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}, "
          f"cgroup quota {'none' if quota is None else f'{quota:g}'}, os.cpu_count() {os.cpu_count()})")
    print(f"memory {'unknown' if mem is None else f'{mem / 1024**3:.1f} GiB'} "
          f"({SLOT_MEMORY_BYTES / 1024**3:g} GiB per slot)")
    print(f"local_model slots {p.slots}; per model step: decode {p.decode}, batch {p.batch}, torch {p.torch} "
          f"thread(s)  [{p.source}]")
    spare = spare_cores()
    if spare.fixed:
        print(f"spare cores: not taken ({spare.why})")
    else:
        time.sleep(1.0)
        spare._due = 0.0
        threads, _ = spare.check()
        print(f"spare cores: re-checked every {ADAPT_INTERVAL_S:g} s; now the rest of the machine uses "
              f"{spare.others if spare.others is not None else float('nan'):.2f} cores, so a long step would use "
              f"{threads} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
