"""The catalogue's write-ahead spool: rows are on disk before DuckDB has them, a dead process's rows are
recorded once by the next writer, calls in flight at a kill become ``interrupted`` usage rows, and a busy
catalogue is waited for a bounded time and then named, its rows kept."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from distillery_assets.catalog import Catalog, NewArtifact
from distillery_assets.catalog import store
from distillery_assets.catalog.spool import spool_files
from distillery_assets.catalog.store import CatalogBusy
from distillery_assets.paths import repo_root


def _child(data_dir, body: str, *, env: dict | None = None, wait: bool = True) -> subprocess.Popen:
    """A python process that works on the test's catalogue, then stops as ``body`` says."""
    code = ("import os, signal, sys, time\nfrom pathlib import Path\n"
            "from distillery_assets.catalog import Catalog, NewArtifact\n")
    code += "cat = Catalog()\ndata = Path(os.environ['DISTILLERY_DATA_DIR'])\n" + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo_root(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "DISTILLERY_DATA_DIR": str(data_dir), **(env or {})})
    if wait:
        proc.wait(timeout=120)
    return proc


def test_a_committed_row_leaves_no_spool_file(data_dir):
    (data_dir / "a.txt").write_text("a")
    cat = Catalog()
    cat.record_artifact(asset_key="a", path=data_dir / "a.txt", run_id="r")
    cat.record_llm_calls([{"request_key": "k", "ok": True, "cached": False, "attempts": 1}])
    assert spool_files(cat.spool_dir) == []
    store._SCHEMA_READY.clear()  # as in the next process: the ids of spool files that are gone are forgotten
    assert cat.query("select count(*) n from spool_applied")[0]["n"] == 0


def test_rows_of_a_killed_process_are_recorded_once_by_the_next_writer(data_dir):
    # a process spools two files and a usage row, commits nothing, and is killed
    proc = _child(data_dir, """
        for name in ("x.txt", "y.txt"):
            (data / name).write_text(name)
        cat.spool_artifacts(asset_key="made", items=[NewArtifact(data / "x.txt"), NewArtifact(data / "y.txt")],
                            partition="p", run_id="r1")
        journal = cat.usage_journal()
        journal("attempt", {"request_key": "k1", "provider": "openai", "model": "m", "tag": "t", "run_id": "r1"})
        journal("row", {"request_key": "k1", "provider": "openai", "model": "m", "tag": "t", "ok": True,
                        "cached": False, "attempts": 1, "input_tokens": 3, "output_tokens": 4, "run_id": "r1"})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cat = Catalog()
    assert len(spool_files(cat.spool_dir)) == 1
    # the first write replays it
    rows = cat.query("select asset_key, partition, path, run_id from artifacts order by path")
    assert rows == [{"asset_key": "made", "partition": "p", "path": "x.txt", "run_id": "r1"},
                    {"asset_key": "made", "partition": "p", "path": "y.txt", "run_id": "r1"}]
    assert cat.query("select request_key, attempts, ok from llm_calls") == [
        {"request_key": "k1", "attempts": 1, "ok": True}]  # the attempt was closed by its row: no interrupted row
    assert spool_files(cat.spool_dir) == []
    assert cat.recover() == {"artifacts": 0, "llm_calls": 0, "interrupted": 0, "spool_files": 0, "own_rows": 0}


def test_a_call_in_flight_at_the_kill_becomes_an_interrupted_row(data_dir):
    proc = _child(data_dir, """
        journal = cat.usage_journal()
        for attempt in range(2):  # a retried call: two attempts sent, the second one never answered
            journal("attempt", {"request_key": "slow", "provider": "openai", "model": "m", "tag": "t", "run_id": "r"})
        journal("attempt", {"request_key": "done", "provider": "openai", "model": "m", "tag": "t", "run_id": "r"})
        journal("row", {"request_key": "done", "ok": True, "cached": False, "attempts": 1, "run_id": "r"})
        journal("row", {"request_key": "hit", "ok": True, "cached": True, "attempts": 0, "run_id": "r"})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cat = Catalog()
    stats = cat.recover()
    assert (stats["llm_calls"], stats["interrupted"]) == (3, 1)
    rows = {r["request_key"]: r for r in cat.query("select * from llm_calls")}
    assert set(rows) == {"slow", "done", "hit"}
    slow = rows["slow"]
    assert (slow["ok"], slow["attempts"], slow["cached"], slow["run_id"]) == (False, 2, False, "r")
    assert slow["error"].startswith("interrupted:") and json.loads(slow["extra"]) == {"error_kind": "interrupted"}
    assert cat.query("select sum(attempts) n from llm_calls where not cached")[0]["n"] == 3  # = calls sent


def test_a_crash_after_the_commit_and_before_the_spool_is_removed_adds_nothing_twice(data_dir):
    proc = _child(data_dir, """
        from distillery_assets.catalog.spool import Spool
        Spool.committed = lambda self, ids: None  # the process dies right after its commit
        (data / "x.txt").write_text("x")
        cat.record_artifact(asset_key="made", path=data / "x.txt", run_id="r1")
        cat.record_llm_calls([{"request_key": "k", "ok": True, "cached": False, "attempts": 1}])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cat = Catalog()
    assert len(spool_files(cat.spool_dir)) == 1  # committed, but still there
    cat.recover()
    assert cat.query("select count(*) n from artifacts")[0]["n"] == 1
    assert cat.query("select count(*) n from llm_calls")[0]["n"] == 1
    assert spool_files(cat.spool_dir) == []


def test_a_line_cut_by_the_kill_is_ignored(data_dir):
    proc = _child(data_dir, """
        cat.record_llm_calls([{"request_key": "first", "ok": True, "cached": False}])
        cat.usage_journal()("row", {"request_key": "second", "ok": True, "cached": False, "attempts": 0})
        spool = cat._spool()
        os.write(spool._fd, b'{"id": "cut-1", "kind": "llm_ca')  # the kill lands in the middle of a line
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(r["request_key"] for r in Catalog().query("select request_key from llm_calls")) == ["first", "second"]


def test_a_busy_catalogue_is_waited_for_then_named_and_its_rows_recorded_later(data_dir, caplog):
    Catalog().query("select 1")  # create it
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
                               "lock.acquire(); "
                               "print('held', flush=True); time.sleep(60)", str(data_dir / "catalog.duckdb.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = _child(data_dir, """
            (data / "x.txt").write_text("x")
            started = time.monotonic()
            try:
                cat.record_artifact(asset_key="made", path=data / "x.txt", run_id="r1")
            except Exception as exc:
                print(type(exc).__name__, round(time.monotonic() - started, 1), exc)
        """, env={"DISTILLERY_CATALOG_LOCK_TIMEOUT_S": "3"})
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    name, waited, message = out.split(" ", 2)
    assert name == "CatalogBusy" and 2.5 <= float(waited) < 20, out
    assert "catalog.duckdb.lock" in message and "Nothing is lost: 1 row(s) wait in" in message
    assert "is busy" in err and "waiting up to 3s" in err  # the wait was announced while it lasted
    cat = Catalog()
    assert [r["path"] for r in cat.query("select path from artifacts")] == ["x.txt"]


def test_duckdb_held_outside_the_lock_is_a_bounded_wait_too(data_dir, monkeypatch):
    Catalog().query("select 1")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(60)", str(data_dir / "catalog.duckdb")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("DISTILLERY_CATALOG_LOCK_TIMEOUT_S", "1.5")
        (data_dir / "x.txt").write_text("x")
        started = time.monotonic()
        with pytest.raises(CatalogBusy, match="outside Distillery holds the DuckDB file"):
            Catalog().record_artifacts(asset_key="made", items=[NewArtifact(data_dir / "x.txt")])
        assert time.monotonic() - started < 15
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # still in this process's spool: the next write records it
    Catalog().query("select 1")
    Catalog().commit()
    assert [r["path"] for r in Catalog().query("select path from artifacts")] == ["x.txt"]
