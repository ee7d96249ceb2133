"""DistilleryIOManager: values become catalogued files at stable paths; inputs come back as Paths."""

import json
from pathlib import Path

import dagster as dg
import pytest

from distillery_assets.catalog import Catalog
from distillery_assets.io import atomic_write_text
from distillery_assets.paths import data_dir
from io_managers.files import DistilleryIOManager, jsonl_path
from io_managers.register import register_files
from resources.catalog import CatalogResource

PARTS = dg.StaticPartitionsDefinition(["a", "b"])


def _resources():
    catalog = CatalogResource()
    return {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)}


@dg.asset
def raw_text() -> Path:
    return atomic_write_text(data_dir() / "raw" / "text.txt", "hello\nworld\n")


@dg.asset(partitions_def=PARTS)
def records(context: dg.AssetExecutionContext, raw_text: Path) -> list[dict]:
    lines = raw_text.read_text().split()
    return [{"partition": context.partition_key, "word": w} for w in lines]


@dg.asset
def combined(records: dict[str, Path]) -> list[dict]:
    return [{"partition": p, "lines": len(path.read_text().splitlines())} for p, path in sorted(records.items())]


@dg.asset(deps=[combined])
def summary(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    out = atomic_write_text(data_dir() / "summary" / "report.md", "# report\n")
    meta = register_files(context, catalog.get(), [out])
    return dg.MaterializeResult(metadata=meta)


def test_list_of_dicts_written_as_partitioned_jsonl_and_loaded_as_dict(data_dir):
    assert dg.materialize([raw_text], resources=_resources()).success
    for p in ("a", "b"):
        result = dg.materialize([raw_text, records], selection=[records], partition_key=p, resources=_resources())
        assert result.success
    path_a = data_dir / "records" / "a.jsonl"
    assert [json.loads(line) for line in path_a.read_text().splitlines()] == [
        {"partition": "a", "word": "hello"}, {"partition": "a", "word": "world"}]
    assert jsonl_path(dg.AssetKey("records"), "b") == data_dir / "records" / "b.jsonl"

    result = dg.materialize([raw_text, records, combined], selection=[combined], resources=_resources())
    assert result.success
    rows = [json.loads(x) for x in (data_dir / "combined" / "all.jsonl").read_text().splitlines()]
    assert rows == [{"partition": "a", "lines": 2}, {"partition": "b", "lines": 2}]

    mat = result.asset_materializations_for_node("combined")[0]
    assert mat.metadata["records"].value == 2
    assert mat.metadata["inputs"].value == ["records/a.jsonl", "records/b.jsonl"]

    cat = Catalog()
    rows = cat.query("select asset_key, partition, path, record_count from latest_artifacts order by asset_key, partition")
    assert rows == [
        {"asset_key": "combined", "partition": None, "path": "combined/all.jsonl", "record_count": 2},
        {"asset_key": "raw_text", "partition": None, "path": "raw/text.txt", "record_count": None},
        {"asset_key": "records", "partition": "a", "path": "records/a.jsonl", "record_count": 2},
        {"asset_key": "records", "partition": "b", "path": "records/b.jsonl", "record_count": 2},
    ]
    lineage = cat.lineage("combined")
    assert {(r["depth"], r["asset_key"], r["input_asset_key"], r["input_path"]) for r in lineage} == {
        (1, "combined", "records", "records/a.jsonl"),
        (1, "combined", "records", "records/b.jsonl"),
        (2, "records", "raw_text", "raw/text.txt"),
    }


def test_materialize_result_assets_register_their_files_and_deps(data_dir):
    assert dg.materialize([raw_text], resources=_resources()).success
    for p in ("a", "b"):
        assert dg.materialize([raw_text, records], selection=[records], partition_key=p, resources=_resources()).success
    assert dg.materialize([raw_text, records, combined, summary], selection=[combined, summary],
                          resources=_resources()).success
    cat = Catalog()
    row = cat.latest_artifact("summary", None)
    assert row["path"] == "summary/report.md"
    inputs = cat.artifact_inputs(row["id"])
    assert [i["input_path"] for i in inputs] == ["combined/all.jsonl"]
    assert "raw_text" in {r["input_asset_key"] for r in cat.lineage("summary")}


def test_returned_path_outside_data_dir_is_refused(data_dir, tmp_path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")

    @dg.asset
    def escapes() -> Path:
        return outside

    with pytest.raises(ValueError, match="outside the data directory"):
        dg.materialize([escapes], resources=_resources())
    assert Catalog().query("select count(*) n from artifacts") == [{"n": 0}]


def test_non_dict_records_and_unknown_types_are_refused(data_dir):
    @dg.asset
    def bad_list() -> list:
        return [{"ok": 1}, "not a dict"]

    @dg.asset
    def bad_type() -> int:
        return 3

    with pytest.raises(TypeError, match="item 1 of the returned list is str"):
        dg.materialize([bad_list], resources=_resources())
    assert not (data_dir / "bad_list" / "all.jsonl").exists()
    with pytest.raises(TypeError, match="returned int"):
        dg.materialize([bad_type], resources=_resources())


def test_explicit_inputs_and_directory_artefacts(data_dir):
    src = atomic_write_text(data_dir / "shipped" / "config.yaml", "lr: 0.1\n")

    @dg.asset
    def adapter(context: dg.AssetExecutionContext) -> dg.Output:
        folder = data_dir / "models" / "adapter"
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"\x00" * 10)
        (folder / "config.json").write_text("{}")
        return dg.Output(folder, metadata={"inputs": [str(src)]})

    result = dg.materialize([adapter], resources=_resources())
    mat = result.asset_materializations_for_node("adapter")[0]
    assert mat.metadata["files"].value == 2 and mat.metadata["size"].value == "12 B"  # one unit, no bytes beside it
    row = Catalog().latest_artifact("adapter", None)
    assert row["kind"] == "dir"
    assert [i["input_path"] for i in Catalog().artifact_inputs(row["id"])] == ["shipped/config.yaml"]


def test_missing_upstream_names_asset_and_partition(data_dir):
    with pytest.raises(FileNotFoundError, match="asset records partition 'a'.*materialize it first"):
        dg.materialize([raw_text, records, combined], selection=[combined], resources=_resources())


RANGE_PARTS = dg.StaticPartitionsDefinition(["p1", "p2", "p3"])
RANGE_TAGS = {"dagster/asset_partition_range_start": "p1", "dagster/asset_partition_range_end": "p3"}


def test_single_run_over_a_partition_range_writes_each_partition(data_dir):
    @dg.asset(partitions_def=RANGE_PARTS, backfill_policy=dg.BackfillPolicy.single_run())
    def ranged(context: dg.AssetExecutionContext) -> dict:
        return {key: [{"key": key}] for key in context.partition_keys}

    @dg.asset(partitions_def=RANGE_PARTS, backfill_policy=dg.BackfillPolicy.single_run())
    def ranged_wrong(context: dg.AssetExecutionContext) -> list:
        return [{"key": "all at once"}]

    assert dg.materialize([ranged], tags=RANGE_TAGS, resources=_resources()).success
    for key in ("p1", "p2", "p3"):
        assert json.loads((data_dir / "ranged" / f"{key}.jsonl").read_text()) == {"key": key}
    assert [r["partition"] for r in Catalog().latest_artifacts("ranged")] == ["p1", "p2", "p3"]
    with pytest.raises(TypeError, match="covers 3 partitions; return a dict partition key"):
        dg.materialize([ranged_wrong], tags=RANGE_TAGS, resources=_resources())


def test_loading_an_asset_that_wrote_several_files_asks_for_deps(data_dir):
    @dg.asset
    def many(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
        paths = [atomic_write_text(data_dir / "many" / f"{i}.txt", str(i)) for i in range(3)]
        return dg.MaterializeResult(metadata=register_files(context, catalog.get(), paths))

    @dg.asset
    def reader(many: Path) -> list[dict]:
        return []

    result = dg.materialize([many], resources=_resources())
    assert result.asset_materializations_for_node("many")[0].metadata["files"].value == 3
    with pytest.raises(ValueError, match="asset many: its newest run wrote 3 files.*deps="):
        dg.materialize([many, reader], selection=[reader], resources=_resources())


def test_register_files_partition_record_count_and_user_folders(data_dir, tmp_path):
    user_folder = tmp_path / "my_corpus" / "part_a"
    user_folder.mkdir(parents=True)
    (user_folder / "one.corpus").write_text("text")
    src = atomic_write_text(data_dir / "prompts" / "a.txt", "x.corpus write\n")

    @dg.asset(partitions_def=RANGE_PARTS, backfill_policy=dg.BackfillPolicy.single_run())
    def user_files(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
        with pytest.raises(ValueError, match="outside the data directory"):
            register_files(context, catalog.get(), [user_folder], partition="p1")
        meta = {}
        for key in context.partition_keys:
            meta = register_files(context, catalog.get(), [user_folder], [src], partition=key, record_count=7,
                                  outside_data_dir=True, metadata={"generated": 1})
        return dg.MaterializeResult(metadata=meta)

    assert dg.materialize([user_files], tags=RANGE_TAGS, resources=_resources()).success
    rows = Catalog().latest_artifacts("user_files")
    assert [(r["partition"], r["path"], r["record_count"], r["kind"]) for r in rows] == [
        (p, user_folder.resolve().as_posix(), 7, "dir") for p in ("p1", "p2", "p3")]
    assert [i["input_path"] for i in Catalog().artifact_inputs(rows[0]["id"])] == ["prompts/a.txt"]


def test_returning_none_is_refused_not_silently_dropped(data_dir):
    @dg.asset
    def forgot_return():
        atomic_write_text(data_dir / "forgot" / "x.txt", "x")

    with pytest.raises(TypeError, match="asset forgot_return returned NoneType"):
        dg.materialize([forgot_return], resources=_resources())
    assert Catalog().query("select count(*) n from artifacts") == [{"n": 0}]
