"""The catalogue check fails when a catalogued file is edited or deleted behind Dagster's back."""

import dagster as dg

from distillery_assets.catalog.cli import main
from io_managers.checks import catalogued_files_check
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["x", "y"]))
def guarded(context: dg.AssetExecutionContext) -> list[dict]:
    return [{"p": context.partition_key}]


def _run_check():
    catalog = CatalogResource()
    result = dg.materialize([guarded, catalogued_files_check(guarded)], selection=dg.AssetSelection.checks_for_assets(guarded),
                            resources={"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)},
                            raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_check_passes_then_fails_on_edit_and_delete(data_dir, capsys):
    catalog = CatalogResource()
    resources = {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)}
    assert not _run_check().passed  # nothing catalogued yet
    for key in ("x", "y"):
        assert dg.materialize([guarded], partition_key=key, resources=resources).success
    ok = _run_check()
    assert ok.passed and ok.metadata["checked"].value == 2
    assert main(["verify", "guarded"]) == 0

    (data_dir / "guarded" / "x.jsonl").write_text('{"p": "edited"}\n')
    (data_dir / "guarded" / "y.jsonl").unlink()
    bad = _run_check()
    assert not bad.passed
    assert (bad.metadata["changed"].value, bad.metadata["missing"].value) == (1, 1)
    assert main(["verify"]) == 1
    assert "changed" in capsys.readouterr().out
