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


def test_a_file_copied_in_by_hand_is_reported_and_repair_records_it(data_dir, capsys):
    import hashlib
    import json
    import shutil

    from distillery_assets.catalog import InputRef, NewArtifact

    catalog = CatalogResource()
    resources = {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)}
    assert dg.materialize([guarded], partition_key="x", resources=resources).success
    # a corpus leaf whose files the catalogue knows, with a prompts.txt of another asset beside them
    leaf = data_dir / "corpus" / "encyclopedia" / "mathematics" / "algebra"
    leaf.mkdir(parents=True)
    (leaf / "prompts.txt").write_text("algebra_history.corpus Write.\nalgebra_intro.corpus Write.\n")
    (leaf / "algebra_history.corpus").write_text("History.\n")
    cat = catalog.get()
    cat.record_artifact(asset_key="encyclopedia_prompts", partition="mathematics", path=leaf / "prompts.txt")
    cat.record_artifacts(asset_key="encyclopedia_corpus", partition="mathematics", run_id="r", items=[
        NewArtifact(leaf / "algebra_history.corpus", [InputRef(leaf / "prompts.txt", "encyclopedia_prompts")])])
    assert main(["verify"]) == 0
    capsys.readouterr()

    shutil.copy(data_dir / "guarded" / "x.jsonl", data_dir / "guarded" / "z.jsonl")  # by hand, behind Dagster's back
    (leaf / "algebra_intro.corpus").write_text("Intro.\n")
    (leaf / ".tmp-algebra_intro.corpus-1-2-3").write_text("a temporary file of an atomic write")
    (data_dir / "llm_cache").mkdir()
    (data_dir / "llm_cache" / "ab.json").write_text("{}")
    assert main(["--json", "verify"]) == 1
    report = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    found = {r["path"]: r for r in report if r["status"] == "uncatalogued"}
    assert set(found) == {"guarded/z.jsonl", "corpus/encyclopedia/mathematics/algebra/algebra_intro.corpus"}
    assert (found["guarded/z.jsonl"]["asset_key"], found["guarded/z.jsonl"]["partition"]) == ("guarded", "x")
    corpus_row = found["corpus/encyclopedia/mathematics/algebra/algebra_intro.corpus"]
    assert (corpus_row["asset_key"], corpus_row["partition"]) == ("encyclopedia_corpus", "mathematics")

    assert main(["--json", "verify", "--repair"]) == 0
    statuses = {json.loads(line)["path"]: json.loads(line)["status"] for line in capsys.readouterr().out.splitlines()}
    assert statuses["guarded/z.jsonl"] == "repaired"
    [row] = cat.query("select asset_key, partition, sha256, metadata from artifacts where path = 'guarded/z.jsonl'")
    assert (row["asset_key"], row["partition"]) == ("guarded", "x")
    assert row["sha256"] == hashlib.sha256((data_dir / "guarded" / "z.jsonl").read_bytes()).hexdigest()
    assert json.loads(row["metadata"])["repaired"] == "catalog verify --repair"
    assert cat.query("select partition from artifacts where path like '%algebra_intro.corpus'") == [
        {"partition": "mathematics"}]
    assert main(["verify"]) == 0
