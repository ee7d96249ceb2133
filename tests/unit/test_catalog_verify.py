"""`catalog verify` fails when a catalogued file is edited or deleted behind Dagster's back."""

import dagster as dg

from distillery_assets.catalog.cli import main
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["x", "y"]))
def guarded(context: dg.AssetExecutionContext) -> list[dict]:
    return [{"p": context.partition_key}]


def test_verify_passes_then_fails_on_edit_and_delete(data_dir, capsys):
    catalog = CatalogResource()
    resources = {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)}
    assert catalog.get().verify("guarded") == []  # nothing catalogued yet
    for key in ("x", "y"):
        assert dg.materialize([guarded], partition_key=key, resources=resources).success
    assert [r["status"] for r in catalog.get().verify("guarded")] == ["ok", "ok"]
    assert main(["verify", "guarded"]) == 0

    (data_dir / "guarded" / "x.jsonl").write_text('{"p": "edited"}\n')
    (data_dir / "guarded" / "y.jsonl").unlink()
    statuses = sorted(r["status"] for r in catalog.get().verify("guarded"))
    assert statuses == ["changed", "missing"]
    assert main(["verify"]) == 1
    assert "changed" in capsys.readouterr().out
