"""The README's commands, typed as a user types them: after ``source .venv/bin/activate`` in the repo root,
plain ``dagster asset materialize --select ...`` (no ``-m``) runs, and plain ``dagster dev`` lists that run.

The activate script comes from scripts/setup.sh (scripts/venv_activation.py). The shell checks that activation
set ``DAGSTER_HOME`` to the repo root and the code location, then moves ``DAGSTER_HOME`` to a temporary
instance (the repo's dagster.yaml with its storage under tmp_path) so the developer's run history is not
touched; the code location still comes from ``DAGSTER_MODULE_NAME`` alone.
"""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml

from distillery_assets.paths import repo_root

pytestmark = pytest.mark.e2e
ACTIVATE = Path(sys.executable).parent / "activate"


@pytest.fixture
def shell(data_dir, tmp_path):
    """``(run, home)``: run(script) runs ``source activate && <script>`` in bash in the repo root."""
    if "# >>> distillery dagster >>>" not in ACTIVATE.read_text():
        pytest.fail(f"{ACTIVATE} was not set up by scripts/setup.sh (run: python scripts/venv_activation.py)")
    home = tmp_path / "dagster_home"
    home.mkdir()
    cfg = yaml.safe_load((repo_root() / "dagster.yaml").read_text())
    cfg["storage"]["sqlite"]["base_dir"] = str(home / "storage")
    cfg["local_artifact_storage"]["config"]["base_dir"] = str(home)
    cfg["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DAGSTER_", "DISTILLERY_LLM_", "VIRTUAL_ENV")) and k != "PYTHONPATH"}
    env.update(DISTILLERY_DATA_DIR=str(data_dir), DAGSTER_TELEMETRY_DISABLED="1",
               PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != ACTIVATE.parent))
    prologue = (f"source {shlex.quote(str(ACTIVATE))} && "
                f'test "$DAGSTER_HOME" = "$PWD" && test "$DAGSTER_MODULE_NAME" = distillery_assets.definitions && '
                f"export DAGSTER_HOME={shlex.quote(str(home))} && ")

    def run(script: str, **kw):
        return subprocess.Popen(["bash", "-c", prologue + script], cwd=repo_root(), env=env,
                                start_new_session=True, **kw)

    return run, home


def test_plain_materialize_then_dagster_dev_lists_the_run(shell, data_dir, tmp_path):
    run, home = shell
    proc = run("dagster asset materialize --select poetry_good_poems", stdout=subprocess.PIPE,
               stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    assert "RUN_SUCCESS" in out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [cli_run] = instance.get_runs()
        assert cli_run.status == dg.DagsterRunStatus.SUCCESS
    assert list((data_dir / "poetry").rglob("*.jsonl"))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "dagster_dev.log", "w")
    dev = run(f"dagster dev -h 127.0.0.1 -p {port}", stdout=log, stderr=subprocess.STDOUT)
    query = "{ runsOrError { ... on Runs { results { runId status } } } " \
            "workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    try:
        deadline, seen = time.monotonic() + 240, None
        while time.monotonic() < deadline:
            assert dev.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-4000:]
            try:
                data = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10).json()["data"]
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(1)
                continue
            seen = data
            locations = data["workspaceOrError"].get("locationEntries", [])
            if locations and all(loc["loadStatus"] == "LOADED" for loc in locations):
                break
            time.sleep(1)
        assert seen is not None, (tmp_path / "dagster_dev.log").read_text()[-4000:]
        [location] = seen["workspaceOrError"]["locationEntries"]  # from pyproject.toml's [tool.dagster]
        assert location["loadStatus"] == "LOADED", (tmp_path / "dagster_dev.log").read_text()[-4000:]
        assert {"runId": cli_run.run_id, "status": "SUCCESS"} in seen["runsOrError"]["results"]
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # dagster dev shuts its webserver, daemon and code server down
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(timeout=30)
        log.close()
