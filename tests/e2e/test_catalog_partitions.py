"""An 8-partition asset materialized the way a backfill does it: one `dagster asset materialize` run per
partition, all 8 started at once in separate processes sharing one DAGSTER_HOME and one catalogue.
Every partition's file, artefact row, LLM-call rows and run row must be there afterwards.

This module is also the code location those subprocesses load (``-m tests.e2e.test_catalog_partitions``).
"""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from distillery_assets.catalog import Catalog
from distillery_assets.paths import repo_root
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource

KEYS = [f"p{i}" for i in range(8)]
ROWS = 4


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(KEYS))
def sharded(context: dg.AssetExecutionContext, catalog: CatalogResource) -> list[dict]:
    key = context.partition_key
    catalog.get().record_llm_calls([{"request_key": f"{key}-{n}", "provider": "test", "tag": "sharded", "ok": True,
                                     "cached": False, "run_id": context.run_id} for n in range(ROWS)])
    catalog.get().record_run(kind="eval", name="sharded", partition=key, run_id=context.run_id,
                             metrics={"pid": os.getpid()})
    return [{"partition": key, "n": n} for n in range(ROWS)]


_catalog = CatalogResource()
defs = dg.Definitions(assets=[sharded],
                      resources={"catalog": _catalog, "io_manager": DistilleryIOManager(catalog=_catalog)})


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_eight_partition_runs_in_parallel_processes_lose_no_row(data_dir, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # create the run storage once, up front
        instance.get_runs(limit=1)
    env = {**os.environ, "DAGSTER_HOME": str(home), "DISTILLERY_DATA_DIR": str(data_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root()), os.environ.get("PYTHONPATH")]))}
    procs = [
        subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", __name__,
                          "--select", "sharded", "--partition", key],
                         cwd=repo_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for key in KEYS
    ]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    for key, proc, out in zip(KEYS, procs, outputs, strict=True):
        assert proc.returncode == 0, f"partition {key} failed:\n{out[-3000:]}"

    cat = Catalog()
    assert cat.query("select partition, path, record_count from latest_artifacts where asset_key = 'sharded' "
                     "order by partition") == [
        {"partition": k, "path": f"sharded/{k}.jsonl", "record_count": ROWS} for k in KEYS]
    assert cat.query("select count(*) n, count(distinct request_key) k, count(distinct run_id) runs "
                     "from llm_calls") == [{"n": 8 * ROWS, "k": 8 * ROWS, "runs": 8}]
    rows = cat.query("select partition, metrics from runs order by partition")
    assert [r["partition"] for r in rows] == KEYS
    assert len({json.loads(r["metrics"])["pid"] for r in rows}) == 8  # eight separate processes
    for k in KEYS:
        assert len((data_dir / "sharded" / f"{k}.jsonl").read_text().splitlines()) == ROWS
