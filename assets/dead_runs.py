"""Runs whose process is gone hold no pool slot: find them, mark them failed, free their slots.

A run killed with ``kill -9`` (or by a crash, an out-of-memory kill) never writes its end event: it
stays STARTED and keeps its ``local_model`` slot (limit: assets/pools.py), so every later run logs "Step
blocked by limit for pool local_model" forever. Dagster's run monitoring cannot see this with the default
run launcher (it has no worker health check) and lives in the daemon, which ``dagster asset materialize``
does not start. So the same recovery runs in three places:

* at the start of every run, before its first step claims a slot: the code location's executor
  (``recovering_executor``, the default ``multi_or_in_process_executor`` with this step in front, same
  run config) -- covers ``dagster asset materialize`` and runs launched from ``dagster dev``; the same
  executor also sets the ``local_model`` limit this machine gets (``assets.pools.apply_pool_limit``);
* every 30 s in ``dagster dev``: the ``free_dead_run_slots`` sensor (on by default) -- covers runs queued
  in the UI behind a dead run, which would otherwise never start;
* by hand: ``python -m assets.dead_runs`` (``--dry-run`` to only list, ``--run-id`` for one run).

How a dead run is told from a live one: the process that started a run writes its pid into the RUN_START
event. The run is dead when no process has that pid, when it is a zombie, or when the process with that pid
was created after the run started (the pid was reused). This assumes the runs of the instance execute on
this machine, as they do with the project's SQLite instance (dagster.yaml). Finished runs that still hold
slots or queued slot claims are released at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg
import psutil
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.executor.base import Executor
from dagster._core.storage.dagster_run import FINISHED_STATUSES

# Runs that claim slots while they execute; STARTING/QUEUED ones claim none yet (run monitoring's start
# timeout handles a worker that died before it started).
_EXECUTING = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
PID_REUSE_SLACK_S = 1.0  # process creation times are rounded; a process started this close is the run's


@dataclass(frozen=True)
class RunProcess:
    run_id: str
    status: str
    pid: int | None  # None: no RUN_START event with a pid
    alive: bool
    slots: int  # claimed slots and queued claims in any pool

    def describe(self) -> str:
        where = f"pid {self.pid} {'alive' if self.alive else 'gone'}" if self.pid else "no pid recorded"
        return f"{self.run_id} {self.status} ({where}, {self.slots} slot claim{'' if self.slots == 1 else 's'})"


def process_alive(pid: int, started_at: float) -> bool:
    """True when the process ``pid`` exists, is not a zombie and was created by ``started_at`` (epoch s)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= started_at + PID_REUSE_SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's live process
        return True


def _start_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event else None
    return (pid, entry.timestamp) if pid else None


def _slot_claims(instance: dg.DagsterInstance) -> dict[str, int]:
    """run id -> claimed slots plus queued claims, over every pool."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    steps: set[tuple[str, str, str]] = set()  # a claimed slot is also listed as an assigned pending step
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        steps |= {(s.run_id, key, s.step_key) for s in [*info.claimed_slots, *info.pending_steps]}
    claims: dict[str, int] = {}
    for run_id, _, _ in steps:
        claims[run_id] = claims.get(run_id, 0) + 1
    return claims


def survey(instance: dg.DagsterInstance) -> list[RunProcess]:
    """Every run that is executing or holds slot claims, with its process and whether it is alive."""
    claims = _slot_claims(instance)
    runs = {r.run_id: r for r in instance.get_runs(filters=dg.RunsFilter(statuses=_EXECUTING))}
    if claims:
        runs.update({r.run_id: r for r in instance.get_runs(filters=dg.RunsFilter(run_ids=list(claims)))})
    found = []
    for run_id, run in runs.items():
        start = _start_pid(instance, run_id) if run.status in _EXECUTING else None
        alive = run.status in _EXECUTING and (start is None or process_alive(*start))
        found.append(RunProcess(run_id, run.status.value, start[0] if start else None, alive,
                                claims.get(run_id, 0)))
    return found


def free_dead_runs(instance: dg.DagsterInstance, *, exclude: str | None = None, only: str | None = None,
                   dry_run: bool = False) -> list[str]:
    """Mark executing runs whose process is gone as failed and free the slots of every finished run.
    Returns one line per run acted on (with ``dry_run``: that would be, and nothing is changed)."""
    executing = {s.value for s in _EXECUTING}
    lines = []
    for proc in survey(instance):
        if proc.alive or proc.run_id == exclude or (only and proc.run_id != only):
            continue
        dead = proc.status in executing
        lines.append(f"{'would free' if dry_run else 'freed'} {proc.describe()}"
                     + (f"{' and mark' if dry_run else ', marked'} failed" if dead else ""))
        if dry_run:
            continue
        run = instance.get_run_by_id(proc.run_id)
        if dead and run is not None and run.status in _EXECUTING:
            instance.report_run_failed(run, f"The run's process (pid {proc.pid}) is gone: killed or crashed. "
                                            "Marked failed and its pool slots freed (assets/dead_runs.py).")
        instance.event_log_storage.free_concurrency_slots_for_run(proc.run_id)
    return lines


def force_free(instance: dg.DagsterInstance, run_id: str) -> str:
    """Mark one run failed (when not finished) and free its slots, alive or not: for a hung run."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise SystemExit(f"no run {run_id!r} in the Dagster instance at $DAGSTER_HOME")
    if run.status not in FINISHED_STATUSES:
        instance.report_run_failed(run, "Marked failed by hand (python -m assets.dead_runs --force).")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return f"freed run {run_id} (was {run.status.value})"


def _free_quietly(instance: dg.DagsterInstance, exclude: str, warn: Callable[[str], None]) -> list[str]:
    try:
        return free_dead_runs(instance, exclude=exclude)
    except Exception as exc:  # the check must never cost the run it runs in
        warn(f"could not check for dead runs holding pool slots: {exc!r}")
        return []


def _pool_limit_quietly(instance: dg.DagsterInstance, warn: Callable[[str], None]) -> str | None:
    """The local_model limit this machine gets (assets/pools.py), before the run's first slot claim."""
    from assets.pools import apply_pool_limit

    try:
        return apply_pool_limit(instance)
    except Exception as exc:  # never costs the run: the pool keeps the limit it had
        warn(f"could not set the local_model pool limit: {exc!r}")
        return None


# ---- the executor: recovery before the run's first slot claim ------------------------------------------

class _RecoveringExecutor(Executor):
    def __init__(self, inner: Executor, start_line: str | None = None):
        self._inner = inner
        self._start_line = start_line

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[DagsterEvent]:
        instance = plan_context.instance
        if not instance.is_ephemeral:
            for line in _free_quietly(instance, plan_context.run_id, plan_context.log.warning):
                yield DagsterEvent.engine_event(plan_context, f"dead run recovery: {line}", EngineEventData())
            line = _pool_limit_quietly(instance, plan_context.log.warning)
            if line:
                yield DagsterEvent.engine_event(plan_context, line, EngineEventData())
        if self._start_line:
            yield DagsterEvent.engine_event(plan_context, self._start_line, EngineEventData())
        yield from self._inner.execute(plan_context, execution_plan)


PRELOAD = ("dagster._core.executor.multiprocess", "distillery_assets.definitions",
           "dagster._core.storage.sqlite_storage")
"""What the forkserver imports before it forks the steps: Dagster's executor (first, as Dagster does), this code
location, and the instance's storage classes. Dagster preloads the job's module only when the job was loaded from a
module code pointer; `dagster asset materialize -m distillery_assets.definitions` is not one, so each forked step
imported the code location again (2.85 of the 3.9 s a profiled step spent before its resources, plus 0.9 s of
instance storage imports)."""

FORKSERVER = {"forkserver": {"preload_modules": list(PRELOAD)}}
"""The step processes' start method when the run config names none. Dagster's own default, ``spawn``, starts
every step in a fresh interpreter that imports Dagster and this code location again (about 2.2 CPU s here, on
every step and every check of a run); ``forkserver`` imports them once per run (:data:`PRELOAD`), in a server
process that forks each step from that state. Importing these starts no thread and loads neither torch nor
llama.cpp (a test checks), so the fork is safe. A run config with ``start_method`` (``spawn: {}``) keeps the
user's choice."""

LIGHT_STEPS = 2
"""Step processes a run may have beside its model steps. Dagster's default ``max_concurrent`` is the CPU count,
which on two cores let two model steps hold every process slot: a two-second quality gate that the next model
step waits for (``poetry_poet_pairs`` waits for ``poetry_briefs``' gate) queued behind them (18 s in a fresh
main job). Model steps stay bounded by the ``local_model`` pool (one per core); the light ones (checks,
dataset splits) get these extra slots."""


def default_max_concurrent() -> int:
    from distillery_assets.threads import model_slots

    return model_slots() + LIGHT_STEPS


def with_run_defaults(executor_config: dict, max_concurrent: int | None = None) -> dict:
    """``executor_config`` with this project's defaults where the run config names none: ``start_method``
    :data:`FORKSERVER`, and ``max_concurrent`` the model slots plus :data:`LIGHT_STEPS`."""
    multi = executor_config.get("multiprocess")
    if not isinstance(multi, dict):
        return executor_config
    multi = dict(multi)
    if not multi.get("start_method"):
        multi["start_method"] = FORKSERVER
    if not multi.get("max_concurrent"):
        multi["max_concurrent"] = max_concurrent or default_max_concurrent()
    return {**executor_config, "multiprocess": multi}


def _create_recovering_executor(init_context) -> Executor:
    given = dict(init_context.executor_config)
    config = with_run_defaults(given)
    line = None
    if "multiprocess" in config:
        multi, named = config["multiprocess"], given.get("multiprocess") or {}
        line = (f"step processes: {multi['max_concurrent']} at once "
                + ("(run config)" if named.get("max_concurrent") else
                   f"(the model slots plus {LIGHT_STEPS} for checks and other light steps)")
                + f", started by {next(iter(multi['start_method']))} "
                + ("(run config)" if named.get("start_method") else
                   "(the code location is imported once per run, not once per step)")
                + "; execution.config.multiprocess.max_concurrent / start_method change them")
    executor = dg.multi_or_in_process_executor.executor_creation_fn(init_context._replace(executor_config=config))
    return _RecoveringExecutor(executor, line)


recovering_executor = dg.ExecutorDefinition(
    name="multi_or_in_process_executor",  # same config as Dagster's default: execution: config: in_process|multiprocess
    config_schema=dg.multi_or_in_process_executor.config_schema,
    requirements=dg.multi_or_in_process_executor.get_requirements,
    executor_creation_fn=_create_recovering_executor,
    description="Dagster's multi_or_in_process_executor, which first frees the pool slots of runs whose "
                "process is gone (assets/dead_runs.py); by default it starts step processes from a forkserver "
                "and runs the model slots plus two light steps at once.",
)


# ---- the sensor: recovery while dagster dev is up -------------------------------------------------------

@dg.sensor(name="free_dead_run_slots", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks runs whose process is gone as failed and frees their pool slots, so runs queued "
                       "behind a killed run start (assets/dead_runs.py).")
def free_dead_run_slots(context: dg.SensorEvaluationContext):
    lines = free_dead_runs(context.instance)
    for line in lines:
        context.log.info(line)
    return dg.SkipReason("; ".join(lines) if lines else "no dead run holds a slot")


defs = dg.Definitions(executor=recovering_executor, sensors=[free_dead_run_slots])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assets.dead_runs",
        description="Free the pool slots of runs whose process is gone (killed, crashed) and mark them failed. "
                    "Uses the instance at $DAGSTER_HOME.")
    parser.add_argument("--dry-run", action="store_true", help="only list what would be freed")
    parser.add_argument("--run-id", help="act on this run only")
    parser.add_argument("--force", action="store_true",
                        help="with --run-id: mark that run failed and free its slots even if its process is alive")
    args = parser.parse_args(argv)
    if args.force and not args.run_id:
        parser.error("--force needs --run-id")
    with dg.DagsterInstance.get() as instance:
        if args.force:
            print(force_free(instance, args.run_id))
            return 0
        for proc in survey(instance):
            print(f"  {proc.describe()}")
        lines = free_dead_runs(instance, only=args.run_id, dry_run=args.dry_run)
        print("\n".join(lines) if lines else "no dead run holds a slot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
