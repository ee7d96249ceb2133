"""A run killed with -9 while it holds the ``local_model`` slot never blocks the next run.

Each test runs the real ``dagster asset materialize`` CLI against an instance configured like the repo's
dagster.yaml (its concurrency and run-monitoring sections; storage in a temporary folder), with the local
in-process LLM (``DISTILLERY_LLM_PROVIDER=local``, so the step takes the pool slot). The run is killed with
SIGKILL (whole process group) once its step holds the slot; the killed run is then STARTED and holds the only
slot -- the state that used to block every later run. The next run must finish by itself within a timeout.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.pools import LOCAL_MODEL_POOL
from distillery_assets.paths import repo_root

pytestmark = pytest.mark.e2e
DAGSTER = str(Path(sys.executable).parent / "dagster")
NEXT_RUN_TIMEOUT_S = 300  # a blocked run waits forever; a recovered one finishes well within this


def _home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the repo's with its storage moved under tmp_path."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    cfg = yaml.safe_load((repo_root() / "dagster.yaml").read_text())
    cfg["storage"]["sqlite"]["base_dir"] = str(home / "storage")
    cfg["local_artifact_storage"]["config"]["base_dir"] = str(home)
    cfg["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    assert cfg["concurrency"]["pools"]["default_limit"] == 1 and cfg["run_monitoring"]["enabled"] is True
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    return home


def _env(data_dir: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_LLM_")}
    env.update(DISTILLERY_DATA_DIR=str(data_dir), DAGSTER_HOME=str(home), DAGSTER_TELEMETRY_DISABLED="1",
               DISTILLERY_LLM_PROVIDER="local", DISTILLERY_LLM_N_THREADS="1", DISTILLERY_COMPUTE_BACKEND="local",
               DISTILLERY_MODEL_SLOTS="1")  # one slot, as on a 1-core machine: the killed run holds the only one
    env.pop("DISTILLERY_CORPUS_ROOT", None)
    return env


def _command(select: str, run_config: dict, *extra: str) -> list[str]:
    return [DAGSTER, "asset", "materialize", "-m", "distillery_assets.definitions", "--select", select, *extra,
            "--config-json", json.dumps(run_config)]


def _run(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=repo_root(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _slot_holders(instance: dg.DagsterInstance) -> set[str]:
    info = instance.event_log_storage.get_concurrency_info(LOCAL_MODEL_POOL)
    return {slot.run_id for slot in info.claimed_slots}


def _kill_while_holding_slot(cmd: list[str], env: dict, home: Path, log: Path) -> str:
    """Start ``cmd``, SIGKILL its process group a second after its step claimed the pool slot; the run id."""
    with open(log, "w") as out, dg.DagsterInstance.from_config(str(home)) as instance:
        proc = subprocess.Popen(cmd, env=env, cwd=repo_root(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not _slot_holders(instance):
                assert proc.poll() is None, f"the run ended before it held the slot:\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"the run never took the slot:\n{log.read_text()[-4000:]}"
                time.sleep(0.2)
            time.sleep(1)  # inside the step: the killed run is given far more work than a second's worth
            assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-4000:]}"
            held = _slot_holders(instance)
            assert held, f"the step gave the slot back before it could be killed:\n{log.read_text()[-4000:]}"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        [killed] = _slot_holders(instance)
        assert {killed} == held
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED  # dead, holding the slot
        return killed


def _assert_recovered(home: Path, killed: str, proc: subprocess.CompletedProcess, elapsed: float,
                      multiprocess: bool = False) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()  # newest first
        assert runs[0].status == dg.DagsterRunStatus.SUCCESS and runs[0].run_id != killed
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
        assert _slot_holders(instance) == set()
        logs = [e.message for e in instance.all_logs(runs[0].run_id) if e.message]
        assert any(m.startswith("dead run recovery: freed") and killed in m for m in logs), logs[:20]
        if multiprocess:  # the project's run defaults (assets/dead_runs.py): steps forked from a forkserver
            assert any(m.startswith("step processes: ") and "started by forkserver" in m for m in logs), logs[:20]
    output = proc.stdout + proc.stderr
    assert "blocked by limit for pool" not in output
    print(f"next run finished in {elapsed:.1f} s after freeing the killed run {killed}")


def test_killed_corpus_run_does_not_block_the_next(data_dir, tmp_path):
    home = _home(tmp_path)
    env = _env(data_dir, home)
    select = ("encyclopedia_corpus", "--partition", "mathematics")
    _run(_command("encyclopedia_prompts", {}, "--partition", "mathematics"), env, 300)
    # the default (multiprocess) executor, as the README's command runs it: the slot is held by the parent
    # the killed run gets minutes of work, so the kill always lands while its step holds the slot
    generate = {"ops": {"encyclopedia_corpus": {"config": {"limit": 40, "max_tokens": 64, "accept_truncated": True}}}}
    killed = _kill_while_holding_slot(_command(select[0], generate, *select[1:]), env, home, tmp_path / "killed.log")

    started = time.monotonic()
    proc = _run(_command(select[0], {"ops": {"encyclopedia_corpus": {"config": {"limit": 1, "max_tokens": 16, "accept_truncated": True}}}},
                         *select[1:]), env, NEXT_RUN_TIMEOUT_S)
    _assert_recovered(home, killed, proc, time.monotonic() - started, multiprocess=True)
    assert list((data_dir / "corpus" / "encyclopedia" / "mathematics").rglob("*.corpus"))


def test_killed_theme_chatml_run_does_not_block_the_next(data_dir, tmp_path):
    home = _home(tmp_path)
    env = _env(data_dir, home)
    in_process = {"execution": {"config": {"in_process": {}}}}
    _run(_command("*theme_chunks", in_process), env, 400)
    ops = {"theme_chatml": {"config": {"max_chunks": 1, "examples_per_chunk": 1, "max_tokens": 160,
                                       "max_passage_chars": 400}}}
    # the killed run gets minutes of work (a short one finished inside the wait on a fast machine: CI stop 19)
    long_ops = {"theme_chatml": {"config": {"max_chunks": 8, "examples_per_chunk": 4, "max_tokens": 160,
                                            "max_passage_chars": 400}}}
    killed = _kill_while_holding_slot(_command("theme_chatml", {**in_process, "ops": long_ops}), env, home,
                                      tmp_path / "killed.log")

    started = time.monotonic()
    proc = _run(_command("theme_chatml", {**in_process, "ops": ops}), env, NEXT_RUN_TIMEOUT_S)
    _assert_recovered(home, killed, proc, time.monotonic() - started)
    stats = json.loads((data_dir / "theme" / "theme_chatml.stats.json").read_text())
    assert stats["chunks_selected"] == 1

