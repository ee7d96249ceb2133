"""Many processes writing one catalogue at once lose no row (file lock + retry on DuckDB lock errors)."""

import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

from distillery_assets.catalog import Catalog

WORKERS = 8
PER_WORKER = 6


def _worker(worker: int, root: str) -> None:
    cat = Catalog(Path(root) / "catalog.duckdb", root=root)
    for i in range(PER_WORKER):
        path = Path(root) / f"w{worker}" / f"{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{worker}-{i}")
        cat.record_artifact(asset_key="concurrent", partition=f"w{worker}", path=path, run_id=f"run{worker}")
        cat.record_llm_calls([{"request_key": f"{worker}-{i}", "provider": "test", "ok": True, "cached": False}])
    cat.record_run(kind="train", name=f"w{worker}", metrics={"rows": PER_WORKER})


def test_eight_processes_write_concurrently_and_every_row_is_there(data_dir):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(w, str(data_dir))) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    cat = Catalog()
    assert cat.query("select count(*) n, count(distinct path) paths, count(distinct id) ids from artifacts") == [
        {"n": WORKERS * PER_WORKER, "paths": WORKERS * PER_WORKER, "ids": WORKERS * PER_WORKER}]
    keys = {r["request_key"] for r in cat.query("select request_key from llm_calls")}
    assert keys == {f"{w}-{i}" for w in range(WORKERS) for i in range(PER_WORKER)}
    assert cat.query("select count(*) n from runs") == [{"n": WORKERS}]


def test_write_waits_for_a_process_holding_the_duckdb_file_outside_the_lock(data_dir):
    db = data_dir / "catalog.duckdb"
    Catalog().query("select 1")  # create the file and schema
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "time.sleep(1.5); c.close()", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (data_dir / "a.txt").write_text("a")
        rec = Catalog().record_artifact(asset_key="a", path=data_dir / "a.txt")
    finally:
        holder.wait(timeout=30)
    assert Catalog().latest_artifact("a", None)["id"] == rec.id
