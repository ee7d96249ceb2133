"""A real Dagster run under the multiprocess executor: 8 asset steps, each in its own process, write
the catalogue at the same time through DistilleryIOManager and CatalogResource; then a fan-in step
loads all 8 files. Every row must be there and the lineage must name all 8 inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from distillery_assets.catalog import Catalog
from distillery_assets.paths import repo_root
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource

SHARDS = 8
ROWS = 5


def _shard_asset(i: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"shard_{i}", group_name="catalog_stress")
    def shard(context: dg.AssetExecutionContext, catalog: CatalogResource) -> list[dict]:
        cat = catalog.get()
        cat.record_llm_calls([{"request_key": f"{i}-{n}", "provider": "test", "tag": f"shard_{i}",
                               "ok": True, "cached": False, "run_id": context.run_id} for n in range(ROWS)])
        cat.record_run(kind="eval", name=f"shard_{i}", run_id=context.run_id, metrics={"pid": os.getpid()})
        return [{"shard": i, "n": n, "pid": os.getpid()} for n in range(ROWS)]

    return shard


SHARD_ASSETS = [_shard_asset(i) for i in range(SHARDS)]


@dg.asset(ins={f"shard_{i}": dg.AssetIn() for i in range(SHARDS)}, group_name="catalog_stress")
def gathered(**shards: Path) -> list[dict]:
    return [{"shard": name, "lines": len(path.read_text().splitlines())} for name, path in sorted(shards.items())]


def _defs() -> dg.Definitions:
    catalog = CatalogResource()
    return dg.Definitions(
        assets=[*SHARD_ASSETS, gathered],
        jobs=[dg.define_asset_job("catalog_stress", selection=dg.AssetSelection.groups("catalog_stress"),
                                  executor_def=dg.multiprocess_executor.configured({"max_concurrent": SHARDS}))],
        resources={"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)},
    )


def catalog_stress_job() -> dg.JobDefinition:
    return _defs().resolve_job_def("catalog_stress")


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_multiprocess_run_loses_no_catalogue_row(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(repo_root()), os.environ.get("PYTHONPATH")])))
    monkeypatch.chdir(repo_root())
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        result = dg.execute_job(dg.reconstructable(catalog_stress_job), instance=instance)
        assert result.success
        pids = {e.pid for e in result.all_events if e.step_key and e.step_key.startswith("shard_")}
    assert len(pids) > 1  # steps really ran in separate processes

    cat = Catalog()
    shards = cat.query("select asset_key, path, record_count from artifacts where asset_key like 'shard_%' "
                       "order by asset_key")
    assert shards == [{"asset_key": f"shard_{i}", "path": f"shard_{i}/all.jsonl", "record_count": ROWS}
                      for i in range(SHARDS)]
    assert cat.query("select count(*) n, count(distinct request_key) k from llm_calls") == [
        {"n": SHARDS * ROWS, "k": SHARDS * ROWS}]
    assert cat.query("select count(*) n from runs") == [{"n": SHARDS}]
    lineage = cat.lineage("gathered")
    assert sorted(r["input_asset_key"] for r in lineage) == [f"shard_{i}" for i in range(SHARDS)]
    gathered_rows = (data_dir / "gathered" / "all.jsonl").read_text().splitlines()
    assert len(gathered_rows) == SHARDS

    # The CLI answers the lineage question from another process, against the same file.
    proc = subprocess.run([sys.executable, "-m", "distillery_assets.catalog", "--json", "lineage", "gathered"],
                          cwd=repo_root(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cli_rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["input_path"] for r in cli_rows) == [f"shard_{i}/all.jsonl" for i in range(SHARDS)]
