"""Dead-run recovery (assets/dead_runs.py) on a real SQLite instance with fabricated runs.

A run is "executing" when its RUN_START event is stored; the event carries the pid of the process that
started it. A slot is claimed through the event-log storage exactly as the executor claims it.
"""

import os
import subprocess
import sys
import time
import uuid

import dagster as dg
import psutil
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.events.log import EventLogEntry

from assets import dead_runs
from assets.pools import LOCAL_MODEL_POOL


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        inst.event_log_storage.set_concurrency_slots(LOCAL_MODEL_POOL, 1)
        yield inst


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _started_run(instance, pid: int, *, at: float | None = None, slot: bool = True) -> str:
    run = instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4())))
    event = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name, pid=pid)
    instance.handle_new_event(EventLogEntry(error_info=None, level="DEBUG", user_message="", run_id=run.run_id,
                                            timestamp=at or time.time(), dagster_event=event, job_name=run.job_name))
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    if slot:
        claim = instance.event_log_storage.claim_concurrency_slot(LOCAL_MODEL_POOL, run.run_id, "step", 0)
        assert claim.is_claimed
    return run.run_id


def _holders(instance) -> set[str]:
    return instance.event_log_storage.get_concurrency_info(LOCAL_MODEL_POOL).active_run_ids


def test_process_alive():
    me = psutil.Process()
    assert dead_runs.process_alive(os.getpid(), time.time())
    assert not dead_runs.process_alive(os.getpid(), me.create_time() - 60)  # same pid, newer process: reused
    assert not dead_runs.process_alive(_dead_pid(), time.time())


def test_a_dead_run_is_failed_and_its_slot_freed_and_the_next_claim_succeeds(instance):
    dead = _started_run(instance, _dead_pid())
    assert _holders(instance) == {dead}
    blocked = instance.event_log_storage.claim_concurrency_slot(LOCAL_MODEL_POOL, "next-run", "step", 0)
    assert not blocked.is_claimed  # the state a killed run left behind: every later step waits

    assert dead_runs.free_dead_runs(instance, dry_run=True) == [
        f"would free {dead} STARTED (pid {instance.get_records_for_run(dead).records[0].event_log_entry.dagster_event.pid}"
        f" gone, 1 slot claim) and mark failed"]
    assert _holders(instance) == {dead}  # a dry run changes nothing

    [line] = dead_runs.free_dead_runs(instance)
    assert line.startswith(f"freed {dead} STARTED") and line.endswith(", marked failed")
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert _holders(instance) == set()
    failure = instance.get_records_for_run(dead, of_type=DagsterEventType.RUN_FAILURE).records
    assert "is gone" in failure[0].event_log_entry.dagster_event.message
    assert dead_runs.free_dead_runs(instance) == []  # nothing left to do


def test_live_runs_and_runs_without_a_pid_are_left_alone(instance):
    live = _started_run(instance, os.getpid())
    assert dead_runs.free_dead_runs(instance) == []
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED and _holders(instance) == {live}
    instance.event_log_storage.free_concurrency_slots_for_run(live)

    unknown = _started_run(instance, 0)  # pid 0: no pid recorded
    assert dead_runs.free_dead_runs(instance) == [] and _holders(instance) == {unknown}


def test_a_reused_pid_counts_as_dead_and_the_current_run_is_excluded(instance):
    reused = _started_run(instance, os.getpid(), at=psutil.Process().create_time() - 60)
    assert dead_runs.free_dead_runs(instance, exclude=reused) == []
    assert len(dead_runs.free_dead_runs(instance)) == 1
    assert instance.get_run_by_id(reused).status == dg.DagsterRunStatus.FAILURE


def test_a_finished_run_still_holding_a_slot_is_released(instance):
    finished = _started_run(instance, os.getpid())
    instance.report_run_failed(instance.get_run_by_id(finished), "failed elsewhere")
    assert _holders(instance) == {finished}  # Dagster's daemon frees these only after a delay, and only in dev
    [line] = dead_runs.free_dead_runs(instance)
    assert line == f"freed {finished} FAILURE (no pid recorded, 1 slot claim)"
    assert _holders(instance) == set()


def test_only_and_force(instance):
    first, second = _started_run(instance, _dead_pid(), slot=False), _started_run(instance, _dead_pid(), slot=False)
    assert [line.split()[1] for line in dead_runs.free_dead_runs(instance, only=second)] == [second]
    assert instance.get_run_by_id(first).status == dg.DagsterRunStatus.STARTED
    live = _started_run(instance, os.getpid())
    assert dead_runs.force_free(instance, live) == f"freed run {live} (was STARTED)"
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.FAILURE and _holders(instance) == set()


def test_cli_lists_then_frees(instance, capsys, monkeypatch):
    dead = _started_run(instance, _dead_pid())
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)
    assert dead_runs.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would free {dead}" in out and instance.get_run_by_id(dead).status == dg.DagsterRunStatus.STARTED
    assert dead_runs.main([]) == 0
    assert f"freed {dead}" in capsys.readouterr().out
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE and _holders(instance) == set()
    with pytest.raises(SystemExit):
        dead_runs.main(["--force"])  # --force needs --run-id
