"""End to end: ``filter_upload`` of ``deep_red_theme.v1`` to the local Hub (tests/support/fakeapi/hub_api.py on
127.0.0.1) through the real asset, HubResource and huggingface_hub (git LFS; ``HF_HUB_DISABLE_XET=1`` because the
local Hub does not speak Xet). The upstream chain is built from an empty data folder as in
``test_filters_assets`` (its oracle answered by a fake OpenAI-compatible server).

Checked: the first run creates a private repo whose files are the staged folder's, each with the sha256 the
metadata and the catalogue name (the weights stored as LFS objects); a second run sends nothing (no upload, no
commit) and records ``skipped`` with the same revision; after the model is trained again (new weights) an
injected failure of the LFS upload fails the step with the named error and leaves the repo at its old revision,
and the next run uploads only what changed; the token is in no event, metadata or catalogue row.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg
import huggingface_hub.constants
import pytest

import resources.hub as hub_module
from assets import filters, theme
from distillery_assets.catalog import Catalog
from resources.hub import HubResource
from tests.e2e.test_filters_assets import V1, _resources, _reply
from tests.support.fakeapi.hub_api import serve_hub
from tests.support.fakeapi.openai_compat import serve_openai_compat

pytestmark = pytest.mark.e2e
TOKEN = "hf_E2eTokenNeverStored0000000000"


def _meta(result) -> dict:
    [mat] = result.asset_materializations_for_node("filter_upload")
    return {k: v.value for k, v in mat.metadata.items()}


def _upload(instance, base_url: str, endpoint: str, *, ok: bool = True):
    resources = {**_resources(base_url), "hub": HubResource(endpoint=endpoint)}
    result = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks, *filters.ASSETS],
                            selection=dg.AssetSelection.assets(filters.filter_upload), partition_key=V1,
                            resources=resources, instance=instance, raise_on_error=False)
    assert result.success is ok
    return result


def _staged(data_dir: Path) -> dict[str, str]:
    [staging] = (data_dir / "filters" / "upload").iterdir()  # the folder filter_upload stages (FilterPaths.upload_dir)
    return {p.relative_to(staging).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in staging.rglob("*") if p.is_file()}


def test_filter_upload_private_once_then_nothing_and_a_failure_leaves_no_revision(data_dir, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hub_module, "_WHOAMI", {})
    upstream = dg.AssetSelection.assets(filters.filter_model).upstream()
    with serve_openai_compat(reply=_reply) as llm, serve_hub(token=TOKEN, user="ada") as hub, \
            dg.instance_for_test() as instance:
        built = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks, *filters.ASSETS], selection=upstream,
                               partition_key=V1, resources=_resources(llm.base_url), instance=instance)
        assert built.success
        monkeypatch.setenv("HF_TOKEN", TOKEN)

        first = _meta(_upload(instance, llm.base_url, hub.endpoint))
        [repo] = hub.repos.values()
        staged = _staged(data_dir)
        assert first["uploaded"] is True and first["private"] is True and repo.private
        assert first["hub_files_sha256"] == staged == {p: repo.sha256(p) for p in staged}
        assert sorted(repo.files) == sorted({*staged, ".gitattributes"})
        assert repo.lfs >= {p for p in staged if p.endswith(".safetensors")} and repo.lfs
        assert first["hub_revision"] == repo.sha

        requests = len(hub.requests)
        second = _meta(_upload(instance, llm.base_url, hub.endpoint))
        assert second["skipped"] is True and second["uploaded"] is False and second["hub_files_sent"] == 0
        assert second["hub_revision"] == first["hub_revision"] == repo.sha
        assert not [r for r in hub.requests[requests:] if r[0] == "PUT" or "/commit/" in r[1]]

        # changed weights (one byte appended, standing in for a retrained head) are what the next upload must carry
        head = repo.sha
        weights = next(p for p in (data_dir / "filters").rglob("head.safetensors") if "upload" not in p.parts)
        weights.write_bytes(weights.read_bytes() + b"\0")
        hub.fail("lfs_upload", 403)
        failed = _upload(instance, llm.base_url, hub.endpoint, ok=False)
        [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        assert f"still at revision {head}" in str(failure.event_specific_data.error)
        assert repo.sha == head

        third = _meta(_upload(instance, llm.base_url, hub.endpoint))
        assert third["uploaded"] is True and third["hub_files_sent"] == 1 and repo.sha == third["hub_revision"] != head
        assert third["hub_files_sha256"] == _staged(data_dir) == {p: repo.sha256(p) for p in _staged(data_dir)}

        rows = Catalog(data_dir / "catalog.duckdb").query(
            "SELECT metrics FROM runs WHERE kind = 'hub_upload' AND name = 'filter_upload' ORDER BY id")
        assert [(m["uploaded"], m["skipped"]) for m in (json.loads(r["metrics"]) for r in rows)] == [
            (True, False), (False, True), (True, False)]
        said = [str(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
        assert said and not [s for s in said if TOKEN in s]
        assert TOKEN not in json.dumps(Catalog(data_dir / "catalog.duckdb").query("SELECT * FROM runs"), default=str)
