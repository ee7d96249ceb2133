"""The team instance (deploy/team/dagster.yaml) on a real PostgreSQL, end to end.

``scripts/postgres.sh`` installs the server when it is missing (apt-get, as the project's setup does when asked),
creates a cluster in a temporary folder, starts it on a free loopback port, creates the database and runs
``dagster instance migrate`` against the team instance. Then, with a DAGSTER_HOME whose dagster.yaml is the team
file with its local folders moved under the test's temporary folder (storage stays on PostgreSQL, read from the
DAGSTER_PG_* variables):

* the real ``dagster asset materialize`` CLI materializes one ``encyclopedia_prompts`` partition (no LLM: the
  prompts are rendered from the shipped tables);
* a backfill of two categories goes the way a UI backfill goes: the UI's GraphQL mutation
  (``launchPartitionBackfill``, through ``dagster-graphql``), then ``dagster-daemon run`` (backfill daemon, run
  queue, default launcher) executes it, and evaluates the dead-run sensor (``free_dead_run_slots``) meanwhile;
* the runs, their events, the materializations per partition, the backfill's status and the ``local_model`` pool
  limit every run writes are read back from PostgreSQL through Dagster's API;
* a run whose process is gone, holding a pool slot, is marked failed and its slot freed (assets/dead_runs.py).

It skips only when PostgreSQL is not installed and cannot be (not root, no apt-get, or apt-get failing).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType
from dagster._core.execution.backfill import BulkActionStatus

from assets.pools import LOCAL_MODEL_POOL, pool_limit
from distillery_assets.partitions import encyclopedia_category_partitions
from distillery_assets.paths import repo_root
from resources.catalog import INSTANCE_KEY, this_host

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
SCRIPT = repo_root() / "scripts" / "postgres.sh"
KEYS = encyclopedia_category_partitions.get_partition_keys()
SINGLE = KEYS[3]  # mathematics: one CLI run
BACKFILL = KEYS[:2]  # arts, geography: adjacent, so the single-run backfill policy makes it one run
BACKFILL_TIMEOUT_S = 240
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _script(command: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster started by scripts/postgres.sh in a temporary folder; its DAGSTER_PG_* variables."""
    # under /tmp, not pytest's tmp_path: /tmp/pytest-of-root is mode 700, closed to the postgres account
    folder = Path(tempfile.mkdtemp(prefix="distillery-pg-", dir="/tmp"))
    folder.chmod(0o755)
    env = {**os.environ, "DISTILLERY_PG_DIR": str(folder), "DAGSTER_PG_PORT": str(_free_port())}
    try:
        install = _script("install", env)
        if install.returncode != 0:
            if "is not installed" in install.stderr or "apt-get install postgresql failed" in install.stderr:
                pytest.skip(f"PostgreSQL cannot be installed here: {install.stderr.strip()}")
            pytest.fail(f"scripts/postgres.sh install failed:\n{install.stdout}\n{install.stderr}")
        start = _script("start", env)
        assert start.returncode == 0, start.stdout + start.stderr
        assert "instance migrated: 3 storages" in start.stdout, start.stdout
        again = _script("start", env)  # idempotent: running already, the same role and database, migrated
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
        exports = _script("env", env)
        assert exports.returncode == 0, exports.stderr
        variables = dict(line.removeprefix("export ").split("=", 1) for line in exports.stdout.splitlines())
        yield {k: v for k, v in variables.items() if k.startswith("DAGSTER_PG_")}
    finally:
        stop = _script("stop", env)
        status = _script("status", env)
        shutil.rmtree(folder, ignore_errors=True)
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
    assert status.returncode == 3, status.stdout  # stopped, cleanly (pg_ctl -m fast waited for it)


@pytest.fixture(scope="module")
def team(postgres, tmp_path_factory):
    """DAGSTER_HOME (the team dagster.yaml, local folders under tmp), a data folder, and the environment."""
    root = tmp_path_factory.mktemp("team")
    home = root / "dagster_home"
    home.mkdir()
    cfg = yaml.safe_load((repo_root() / "deploy" / "team" / "dagster.yaml").read_text())
    assert set(cfg["storage"]) == {"postgres"}
    cfg["local_artifact_storage"]["config"]["base_dir"] = str(root / "artifacts")
    cfg["compute_logs"]["config"]["base_dir"] = str(root / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    data = root / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILLERY_LLM_", "DAGSTER_PG_"))}
    env.pop("DAGSTER_MODULE_NAME", None)  # the daemon and dagster-graphql get -w workspace.yaml
    env.pop("DISTILLERY_CORPUS_ROOT", None)
    env.update(postgres, DAGSTER_HOME=str(home), DISTILLERY_DATA_DIR=str(data), DAGSTER_TELEMETRY_DISABLED="1")
    return {"home": home, "data": data, "env": env}


@pytest.fixture
def instance(team, monkeypatch):
    for key, value in team["env"].items():
        if key.startswith("DAGSTER_PG_"):
            monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(team["home"])) as inst:
        yield inst


def _event_types(instance: dg.DagsterInstance, run_id: str) -> list[DagsterEventType]:
    return [r.event_log_entry.dagster_event_type for r in instance.get_records_for_run(run_id, limit=1000).records
            if r.event_log_entry.is_dagster_event]


def _materialized(instance: dg.DagsterInstance, partition: str) -> list:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("encyclopedia_prompts"), asset_partitions=[partition]),
        limit=10).records


def test_instance_is_on_postgres(instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    default = yaml.safe_load((repo_root() / "dagster.yaml").read_text())["concurrency"]
    # what the daemon's queue applies (dagster.yaml's concurrency > runs), the same limits as the personal instance
    config = instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == default["runs"]["max_concurrent_runs"]
    assert config.pool_config.default_pool_limit == default["pools"]["default_limit"]
    assert instance.run_monitoring_enabled
    assert instance.event_log_storage.supports_global_concurrency_limits  # pools work on PostgreSQL


def _launch_backfill(team) -> str:
    """The UI's own mutation for a backfill of BACKFILL, through dagster-graphql on the code location."""
    variables = {"params": {"partitionNames": BACKFILL, "assetSelection": [{"path": ["encyclopedia_prompts"]}],
                            "fromFailure": False, "tags": []}}
    response = team["home"].parent / "launch_backfill.json"
    launch = subprocess.run([str(BIN / "dagster-graphql"), "-w", "workspace.yaml", "-t", LAUNCH_BACKFILL,
                             "-v", json.dumps(variables), "-o", str(response)], env=team["env"], cwd=repo_root(),
                            capture_output=True, text=True, timeout=300)
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    answer = json.loads(response.read_text())["data"]["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    return answer["backfillId"]


def _materialize_one(team, instance) -> None:
    """The CLI, in its own process (executor, dead-run check, pool limit), against the team instance."""
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "distillery_assets.definitions",
           "--select", "encyclopedia_prompts", "--partition", SINGLE]
    proc = subprocess.run(cmd, env=team["env"], cwd=repo_root(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": SINGLE}))
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    types = _event_types(instance, runs[0].run_id)
    for expected in (DagsterEventType.RUN_START, DagsterEventType.STEP_START, DagsterEventType.ASSET_MATERIALIZATION,
                     DagsterEventType.STEP_SUCCESS, DagsterEventType.RUN_SUCCESS):
        assert expected in types, types
    assert DagsterEventType.RUN_ENQUEUED not in types  # the CLI runs at once, outside the queue
    [record] = _materialized(instance, SINGLE)
    assert record.run_id == runs[0].run_id
    assert (team["data"] / "corpus" / "encyclopedia" / SINGLE).is_dir()
    limit, _ = pool_limit(instance, LOCAL_MODEL_POOL)  # written by the run's executor, kept in PostgreSQL
    assert limit is not None and limit >= 1
    stored = json.loads(instance.run_storage.get_cursor_values({INSTANCE_KEY})[INSTANCE_KEY])
    assert stored["host"] == this_host()  # the catalogue's host, recorded in the team instance


def test_partition_and_ui_backfill_on_postgres(team, instance):
    """A UI backfill through the daemon and, while the daemon works on it, one partition from the CLI."""
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env=team["env"],
                              cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        backfill_id = _launch_backfill(team)
        _materialize_one(team, instance)
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        while time.monotonic() < deadline:
            backfill = instance.get_backfill(backfill_id)
            if backfill.status not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING):
                break
            assert daemon.poll() is None, f"dagster-daemon exited: {daemon.stdout.read()[-4000:]}"
            time.sleep(2)
        else:
            pytest.fail(f"backfill {backfill_id} still {backfill.status} after {BACKFILL_TIMEOUT_S}s")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            log = daemon.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            log = daemon.communicate()[0]
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, f"{backfill.status}\n{log[-4000:]}"
    # the daemon evaluates the dead-run sensor (assets/dead_runs.py) on this instance too
    assert "Sensor free_dead_run_slots skipped: no dead run holds a slot" in log, log[-4000:]

    runs = instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
    assert len(runs) == 1, runs  # BackfillPolicy.single_run: both categories in one run
    run = runs[0]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/asset_partition_range_start"] == BACKFILL[0]
    assert run.tags["dagster/asset_partition_range_end"] == BACKFILL[-1]
    types = _event_types(instance, run.run_id)
    # queued, then started by the daemon's run queue
    assert types.index(DagsterEventType.RUN_ENQUEUED) < types.index(DagsterEventType.RUN_STARTING), types
    assert types.count(DagsterEventType.ASSET_MATERIALIZATION) == len(BACKFILL)
    assert DagsterEventType.RUN_SUCCESS in types, types
    for category in BACKFILL:
        assert [r.run_id for r in _materialized(instance, category)] == [run.run_id]
        assert (team["data"] / "corpus" / "encyclopedia" / category).is_dir()


def test_dead_run_recovery_on_postgres(instance):
    """The dead-run recovery (assets/dead_runs.py: the executor, the daemon's sensor, the CLI) on PostgreSQL: a
    STARTED run whose process is gone and that holds a pool slot is marked failed and its slot freed."""
    from dagster._core.events import DagsterEvent
    from dagster._core.utils import make_new_run_id

    from assets.dead_runs import free_dead_runs

    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid belongs to no process now
    pool = "pg_test_pool"  # a pool of its own: the local_model limit of the other test stays as its run set it
    instance.event_log_storage.set_concurrency_slots(pool, 1)
    run = instance.add_run(dg.DagsterRun(job_name="killed_job", run_id=make_new_run_id(),
                                         status=dg.DagsterRunStatus.STARTED))
    instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, job_name="killed_job",
                                               pid=gone.pid), run.run_id)
    assert instance.event_log_storage.claim_concurrency_slot(pool, run.run_id, "load_model").is_claimed

    lines = free_dead_runs(instance)
    assert any(run.run_id in line and "marked failed" in line for line in lines), lines
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert not instance.event_log_storage.get_concurrency_info(pool).claimed_slots
    assert free_dead_runs(instance) == []  # nothing left to free
