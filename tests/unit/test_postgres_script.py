"""scripts/postgres.sh refuses clearly, before touching anything, what it cannot do (no server running here)."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from distillery_assets.paths import repo_root

SCRIPT = repo_root() / "scripts" / "postgres.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)


def test_unknown_command_prints_usage():
    proc = _run("restart")
    assert proc.returncode == 2 and "usage: bash scripts/postgres.sh install|start|stop|status|env" in proc.stderr


def test_env_before_any_start_names_the_missing_file(tmp_path):
    proc = _run("env", DISTILLERY_PG_DIR=str(tmp_path / "pg"))
    assert proc.returncode == 1
    assert f"no {tmp_path / 'pg' / 'connection.env'} yet: bash scripts/postgres.sh start" in proc.stderr


def test_a_bin_folder_without_initdb_is_named(tmp_path):
    proc = _run("install", DISTILLERY_PG_DIR=str(tmp_path / "pg"), DISTILLERY_PG_BIN=str(tmp_path))
    assert proc.returncode != 0 and f"DISTILLERY_PG_BIN={tmp_path} has no initdb" in proc.stderr


def test_stop_and_status_without_a_cluster(tmp_path):
    stop = _run("stop", DISTILLERY_PG_DIR=str(tmp_path / "pg"))
    assert stop.returncode == 0 and "nothing to stop" in stop.stdout
    status = _run("status", DISTILLERY_PG_DIR=str(tmp_path / "pg"))
    assert status.returncode == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="the folder check is for a root caller handing the cluster to 'postgres'")
def test_a_folder_the_postgres_account_cannot_reach_is_refused():
    closed = Path(tempfile.mkdtemp(prefix="distillery-pg-closed-"))  # mode 700, like /root or /tmp/pytest-of-root
    try:
        proc = _run("install", DISTILLERY_PG_DIR=str(closed / "pg"))
        if "no user 'postgres'" in proc.stderr or "is not installed" in proc.stderr:
            pytest.skip(proc.stderr.strip())
        assert proc.returncode == 1
        assert "cannot write" in proc.stderr and "Set DISTILLERY_PG_DIR" in proc.stderr
        assert not (closed / "pg" / "cluster" / "PG_VERSION").exists()
    finally:
        subprocess.run(["rm", "-rf", str(closed)], check=True)
