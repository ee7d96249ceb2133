"""``record_upload``: what an upload asset publishes and records, through Dagster against the local Hub. The
catalogue's ``runs`` table gets a ``hub_upload`` row with the repo, the revision and each file's sha256 when the
Hub was reached (uploaded or skipped), none when nothing was sent; the asset's metadata names the revision, the
files with their sha256 and ``private: true``; a failed upload fails the step with the named error and records
nothing; the token is in no event, metadata value or catalogue row."""

import hashlib
import json
import os
from pathlib import Path

import dagster as dg
import huggingface_hub.constants
import pytest

import resources.hub as hub_module
from distillery_assets.catalog import Catalog
from resources.catalog import CatalogResource
from resources.hub import HubResource, record_upload
from tests.support.fakeapi.hub_api import serve_hub

TOKEN = "hf_RecordTokenNeverStored987654321"
CARD = "---\nlicense: mit\n---\n# Weights\n"


@dg.asset
def weights_upload(context: dg.AssetExecutionContext, hub: HubResource, catalog: CatalogResource):
    folder = Path(os.environ["DISTILLERY_DATA_DIR"]) / "weights"
    result = hub.upload_folder(folder, "weights", card_markdown=CARD)
    return dg.MaterializeResult(metadata=record_upload(context, catalog.get(), result))


@pytest.fixture
def folder(data_dir):
    folder = data_dir / "weights"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(os.urandom(50_000))
    (folder / "config.json").write_text("{}\n")
    return folder


def _materialize(instance, endpoint: str | None, *, ok: bool = True):
    result = dg.materialize([weights_upload], instance=instance, raise_on_error=False, resources={
        "hub": HubResource(endpoint=endpoint), "catalog": CatalogResource()})
    assert result.success is ok
    return result


def _meta(result) -> dict:
    [mat] = result.asset_materializations_for_node("weights_upload")
    return {k: v.value for k, v in mat.metadata.items()}


def _hub_rows(data_dir) -> list[dict]:
    return Catalog(data_dir / "catalog.duckdb").query(
        "SELECT name, partition, run_id, params, metrics FROM runs WHERE kind = 'hub_upload' ORDER BY id")


def _everything_said(instance, data_dir) -> str:
    events = [str(record) for run in instance.get_runs() for record in instance.all_logs(run.run_id)]
    assert events  # the runs' event logs are read, not an empty list
    rows = Catalog(data_dir / "catalog.duckdb").query("SELECT * FROM runs")
    return "\n".join(events) + json.dumps(rows, default=str)


def test_uploaded_then_skipped_each_recorded_with_the_files_sha256(data_dir, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub_module, "_WHOAMI", {})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    sha = {"README.md": hashlib.sha256(CARD.encode()).hexdigest(),
           **{p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}}
    with serve_hub(token=TOKEN, user="ada") as hub, dg.instance_for_test() as instance:
        first = _meta(_materialize(instance, hub.endpoint))
        repo = hub.repo("ada/weights")
        assert first["uploaded"] is True and first["skipped"] is False and first["private"] is True and repo.private
        assert first["hub_revision"] == repo.sha and first["repo_id"] == "ada/weights"
        assert first["hub_endpoint"] == hub.endpoint and first["hub_files_sent"] == 3
        assert first["hub_files_sha256"] == sha == {p: repo.sha256(p) for p in sha}
        assert "| model.gguf | " + sha["model.gguf"] in first["hub_files"] and "LFS" in first["hub_files"]

        second = _meta(_materialize(instance, hub.endpoint))
        assert second["uploaded"] is False and second["skipped"] is True and second["hub_files_sent"] == 0
        assert second["hub_revision"] == first["hub_revision"] == repo.sha and len(repo.commits) == 2

        rows = _hub_rows(data_dir)
        assert [r["name"] for r in rows] == ["weights_upload", "weights_upload"]
        params, metrics = json.loads(rows[0]["params"]), [json.loads(r["metrics"]) for r in rows]
        assert params == {"repo_id": "ada/weights", "repo_type": "model", "endpoint": hub.endpoint, "private": True}
        assert [(m["uploaded"], m["skipped"], m["revision"]) for m in metrics] == [
            (True, False, repo.sha), (False, True, repo.sha)]
        assert {f["path"]: f["sha256"] for f in metrics[0]["files"]} == sha
        assert {f["path"]: f["lfs"] for f in metrics[1]["files"]} == {"README.md": False, "config.json": False,
                                                                      "model.gguf": True}
        assert TOKEN not in _everything_said(instance, data_dir)


def test_a_failed_upload_fails_the_step_and_records_nothing(data_dir, folder, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub_module, "_WHOAMI", {})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with serve_hub(token=TOKEN, user="ada") as hub, dg.instance_for_test() as instance:
        hub.fail("commit", 500)
        result = _materialize(instance, hub.endpoint, ok=False)
        [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        text = str(failure.event_specific_data.error)
        assert "HubUploadError" in text and "ada/weights" in text and "Nothing was committed" in text
        assert [c["summary"] for c in hub.repo("ada/weights").commits] == ["initial commit"]
        assert _hub_rows(data_dir) == [] and TOKEN not in _everything_said(instance, data_dir)


def test_without_a_token_nothing_is_sent_or_recorded(data_dir, folder):
    with dg.instance_for_test() as instance:
        meta = _meta(_materialize(instance, "http://127.0.0.1:9"))  # a closed port: any request would fail
        assert meta["uploaded"] is False and meta["skipped"] is False and meta["reason"] == "HF_TOKEN not set"
        assert meta["hub_revision"] == "" and meta["hub_files_sent"] == 0
        assert set(meta["hub_files_sha256"]) == {"README.md", "config.json", "model.gguf"}
        assert not (data_dir / "catalog.duckdb").exists() or _hub_rows(data_dir) == []
