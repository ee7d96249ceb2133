"""End to end: ``*filter_report`` of the shipped ``deep_red_theme`` filter from an empty data folder, the oracle
answered by a fake OpenAI-compatible server on 127.0.0.1 (deterministic scores from the prompt's hash, an
occasional answer that misses a dimension), then again (the journal answers everything: no LLM call), then
``v2`` as its own partition beside it.

Checked: the seed's layout (version folder's ``model/``, ``training_history.json``, ``training_metadata.json``;
the splits folder with ``split_metadata.json``; the report folder with the .docx and the plots), the results
tables carry the mean-predictor and ridge baselines, a ``runs`` row per trained model, the catalogue's
lineage of ``filter_model`` reaches the chunk file and the oracle journal whose request keys are the
``llm_calls`` rows, and the Hub upload declines without HF_TOKEN.
"""

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets import filters, theme
from distillery_assets.catalog import Catalog
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource
from resources.llm import LLMResource
from tests.support.fakeapi.openai_compat import serve_openai_compat

pytestmark = pytest.mark.e2e
V1, V2 = "deep_red_theme.v1", "deep_red_theme.v2"


def _reply(messages, body) -> str:
    """Scores drawn from the document prompt's hash (the first message, so a re-ask gets the same answer); one
    document in four always misses its first dimension."""
    schema = body["response_format"]["json_schema"]["schema"]
    digest = hashlib.sha256(messages[0]["content"].encode()).digest()
    out = {}
    for i, (name, prop) in enumerate(schema["properties"].items()):
        if "enum" in prop:
            out[name] = prop["enum"][-1]
        else:
            lo, hi = int(prop.get("minimum", 0)), int(prop.get("maximum", 10))
            out[name] = lo + digest[i + 1] % (hi - lo + 1)
    if digest[0] % 4 == 0:
        out.pop(next(iter(schema["properties"])))
    return json.dumps(out)


def _resources(base_url: str) -> dict:
    catalog = CatalogResource()
    return {"catalog": catalog, "compute": ComputeResource(), "hub": HubResource(),
            "io_manager": DistilleryIOManager(catalog=catalog),
            "llm": LLMResource(provider="openai", base_url=base_url, concurrency=4, max_attempts=2, json_reasks=1,
                               api_key_env="DISTILLERY_TEST_UNSET_KEY", catalog=catalog)}


def _meta(result, node: str) -> dict:
    [mat] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mat.metadata.items()}


def _run(instance, base_url: str, partition: str, selection):
    result = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks, *filters.ASSETS], selection=selection,
                            partition_key=partition, resources=_resources(base_url), instance=instance)
    assert result.success
    return result


def test_filter_report_chain_reruns_free_and_versions_are_partitions(data_dir: Path):
    upstream_of_report = dg.AssetSelection.assets(filters.filter_report, filters.filter_upload).upstream()
    only_filters = dg.AssetSelection.assets(filters.filter_report, filters.filter_upload).upstream() \
        - dg.AssetSelection.assets(theme.gutenberg_books, theme.gutenberg_chunks)
    with serve_openai_compat(reply=_reply) as srv, dg.instance_for_test() as instance:
        first = _run(instance, srv.base_url, V1, upstream_of_report)
        asked = srv.request_count
        assert asked >= 16  # deep_red_theme v1 labels at most 16 passed documents (+ re-asks)

        root = data_dir / "filters"
        version = root / "deep_red_theme" / "v1"
        assert (version / "model" / "filter_model.json").exists() and (version / "model" / "head.safetensors").exists()
        history = json.loads((version / "training_history.json").read_text())
        training = json.loads((version / "training_metadata.json").read_text())
        assert training["filter_name"] == "deep_red_theme" and set(training["baseline_test_mae"]) == {"mean", "ridge"}
        # the default recipe: ridge and the MLP compared on validation, the winner kept (its epochs are the history)
        assert training["recipe"] == "auto" and training["training_mode"] in ("ridge", "mlp")
        cands = {c["name"]: c for c in training["candidates"]}
        assert cands["ridge"]["status"] == cands["mlp"]["status"] == "trained"
        assert cands[training["training_mode"]]["kept"] and cands["full_finetune"]["status"] == "skipped"
        assert (history == []) == (training["training_mode"] == "ridge")
        assert all({"train", "val"} <= set(h) for h in history)
        splits = root / "datasets" / "deep_red_theme_ground_truth_v1_splits"
        split_meta = json.loads((splits / "split_metadata.json").read_text())
        assert split_meta["seed"] == 42 and split_meta["stratified_by"] == "tier"
        assert split_meta["train_articles"] + split_meta["val_articles"] + split_meta["test_articles"] == \
            split_meta["total_articles"]
        assert all((splits / f"{s}.jsonl").exists() for s in ("train", "val", "test"))
        reports = root / "reports"
        docx = reports / "deep_red_theme_v1_training_report.docx"
        assert docx.stat().st_size > 20_000
        plots = reports / "deep_red_theme_v1_plots"
        assert {p.name for p in plots.iterdir()} >= {"overall_metrics.png", "per_dimension_mae.png",
                                                     "loss_curves.png", "predicted_vs_true.png", "training_summary.txt"}
        from docx import Document

        text = "\n".join(p.text for p in Document(str(docx)).paragraphs)
        assert "0.82" in text and "Cost" in text and "the mean predictor (" in text
        assert "None" not in text and ("learned from the labels" not in text or training["training_mode"] != "ridge")

        gt = _meta(first, "filter_ground_truth")
        assert gt["records"] + gt["rejects"] + gt["failures"] == gt["selected_for_oracle"]
        assert gt["rejects"] >= 1 and "invalid_json" in gt["reject_reasons"]  # the schema check, after re-asks
        rejects = [json.loads(line) for line in (root / "datasets" / "deep_red_theme_ground_truth_v1" /
                                                 "oracle_rejects.jsonl").read_text().splitlines()]
        assert len(rejects) == gt["rejects"] + gt["failures"] and all(r["reason"] and r["key"] for r in rejects)
        assert gt["llm_provider_calls"] >= gt["selected_for_oracle"]
        pre = _meta(first, "filter_prefiltered")
        assert 0 < pre["passed"] < pre["documents"] and pre["expected_pass_rate"] == 0.94
        for node in ("filter_model", "filter_report"):
            meta = _meta(first, node)
            table = meta["results"]
            assert "| mean " in table and "| ridge " in table and "| model " in table
            assert "0.82" in meta["f1_anchor"]
        model_meta = _meta(first, "filter_model")
        assert model_meta["ran_on"] == "local CPU"
        report_meta = _meta(first, "filter_report")
        assert "| kept |" in report_meta["candidates"] and "| ridge |" in report_meta["candidates"]
        if history:  # the curves of a candidate trained by epochs, with the baselines' levels
            assert report_meta["mae_curves"].startswith("![") and len(report_meta["mae_curves"]) < 1000
        upload = _meta(first, "filter_upload")
        assert upload["uploaded"] is False and "HF_TOKEN" in upload["reason"]

        catalog = Catalog()
        runs = catalog.query("SELECT name, partition, metrics FROM runs WHERE name = 'filter_model'")
        assert [r["partition"] for r in runs] == [V1]
        assert set(json.loads(runs[0]["metrics"])["test"]) == {"model", "mean", "ridge"}
        lineage = catalog.lineage("filter_model")
        reached = {r["input_asset_key"] for r in lineage}
        assert {"filter_splits", "filter_ground_truth", "filter_prefiltered", "filter_candidates",
                "gutenberg_chunks"} <= reached
        journal = root / "datasets" / "deep_red_theme_ground_truth_v1" / "oracle_journal.jsonl"
        assert any(r["input_path"].endswith("oracle_journal.jsonl") for r in lineage)
        keys = {json.loads(line)["request_key"] for line in journal.read_text().splitlines()}
        called = {r["request_key"] for r in catalog.query("SELECT request_key FROM llm_calls")}
        assert keys and keys <= called
        edited = {r["source"] for r in catalog.lineage_sources("filter_model")}  # the definition's files, by sha256
        assert {f"source:filters/deep_red_theme/v1/{f}" for f in ("config.yaml", "prefilter.yaml", "prompt.md")} <= edited
        assert not any("/model" in s or "training_" in s for s in edited)  # outputs beside them are not sources

        # again: every answer comes from the journal; the fake server hears nothing
        second = _run(instance, srv.base_url, V1, only_filters)
        assert srv.request_count == asked
        again = _meta(second, "filter_ground_truth")
        assert again["llm_provider_calls"] == 0 and again["resumed_from_journal"] == gt["selected_for_oracle"]
        assert _meta(second, "filter_model")["reused"] is True

        # v2 is its own partition: its own folders, report and runs row; v1's files stay
        third = _run(instance, srv.base_url, V2, only_filters)
        assert (root / "deep_red_theme" / "v2" / "model" / "filter_model.json").exists()
        assert (reports / "deep_red_theme_v2_training_report.docx").exists() and docx.exists()
        assert json.loads((root / "datasets" / "deep_red_theme_ground_truth_v2_splits" / "split_metadata.json")
                          .read_text())["filter_version"] == "2.0"
        assert _meta(third, "filter_prefiltered")["expected_pass_rate"] == 0.86
        runs = catalog.query("SELECT partition FROM runs WHERE name = 'filter_model' ORDER BY id")
        assert [r["partition"] for r in runs] == [V1, V2]
        parts = {e.partition for e in instance.fetch_materializations(dg.AssetKey("filter_report"), limit=10).records
                 for e in [e.asset_materialization]}
        assert parts == {V1, V2}


def test_labels_mode_reads_a_labels_file_and_never_asks_an_llm(data_dir: Path, tmp_path: Path, monkeypatch):
    """``oracle: labels`` with a JSONL source of articles: the labels file is the ground truth (a malformed line
    and a score out of range are rejects naming file:line:field), no LLM is asked, and lineage reaches it."""
    import yaml

    from tests.support.filters_defs import copy_filter, edit_config

    root = tmp_path / "defs"
    folder = copy_filter(root, "educational_value", 1)
    monkeypatch.setenv("DISTILLERY_FILTERS_DIR", str(root))
    dims = list(yaml.safe_load((folder / "config.yaml").read_text())["scoring"]["dimensions"])
    words = "the river carries silt to the delta where farmers plant rice each spring".split()
    articles, labels = [], []
    for i in range(30):
        text = " ".join(words[(i + j) % len(words)] for j in range(80)) + f" (article {i})"
        articles.append({"id": f"a{i}", "title": f"Article {i}", "content": text, "url": "", "source": "test",
                         "published_date": ""})
        labels.append({"id": f"a{i}", "scores": {d: (i * (k + 1)) % 11 for k, d in enumerate(dims)}})
    labels[3]["scores"][dims[0]] = 14  # out of range
    labels.append({"id": "ghost", "scores": labels[0]["scores"]})  # no such document: a named reject
    (folder / "articles.jsonl").write_text("".join(json.dumps(a) + "\n" for a in articles))
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels) + "{not json\n")

    def change(c):
        c["sources"] = [{"kind": "jsonl", "path": "articles.jsonl"}]
        c["oracle"] = {"mode": "labels", "labels": "labels.jsonl"}
    edit_config(folder, change)

    (folder / "prompt.md").unlink()  # nothing asks an oracle in labels mode: the prompt is optional

    selection = dg.AssetSelection.assets(filters.filter_report).upstream() - dg.AssetSelection.assets(
        theme.gutenberg_books, theme.gutenberg_chunks)
    with dg.instance_for_test() as instance:  # an LLM that cannot be reached: any call would fail the run
        result = _run(instance, "http://127.0.0.1:9/v1", "educational_value.v1", selection)
    gt = _meta(result, "filter_ground_truth")
    assert (gt["mode"], gt["records"], gt["rejects"], gt["llm_requests"]) == ("labels", 29, 3, 0)
    rejects = [json.loads(line) for line in (data_dir / "filters" / "datasets" / "educational_value_ground_truth_v1"
                                             / "oracle_rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {"score_out_of_range", "malformed_line", "no_document"}
    from docx import Document

    docx = data_dir / "filters" / "reports" / "educational_value_v1_training_report.docx"
    text = "\n".join(p.text for p in Document(str(docx)).paragraphs)
    assert "None None" not in text and "the labels file labels.jsonl" in text and "no oracle was asked" in text
    assert "the mean predictor" in text and "ridge" in text
    assert any(r["where"].endswith(f"labels.jsonl:4:scores.{dims[0]}") for r in rejects)
    assert "| ridge " in _meta(result, "filter_model")["results"]
    lineage = Catalog().lineage("filter_model")
    assert any(str(r["input_path"]).endswith("labels.jsonl") for r in lineage)
    assert any(str(r["input_path"]).endswith("articles.jsonl") for r in lineage)

    # agreement: without a second oracle it says so; with one (a fake server) per-dimension r and MAE. Asking the
    # second oracle needs the filter's prompt again.
    from tests.support.filters_defs import SHIPPED

    shutil.copy2(SHIPPED / "educational_value" / "v1" / "prompt.md", folder / "prompt.md")
    agree = dg.AssetSelection.assets(filters.filter_oracle_agreement)
    with dg.instance_for_test() as instance:
        none = _meta(_run(instance, "http://127.0.0.1:9/v1", "educational_value.v1", agree), "filter_oracle_agreement")
        assert none["compared"] is False and "second oracle" in none["reason"]
        with serve_openai_compat(reply=_reply) as srv:
            config = {"provider": "openai", "base_url": srv.base_url, "api_key_env": "DISTILLERY_TEST_UNSET_KEY",
                      "model": "fake-b", "sample": 12}
            result = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks, *filters.ASSETS], selection=agree,
                                    partition_key="educational_value.v1", resources=_resources("http://127.0.0.1:9/v1"),
                                    instance=instance,
                                    run_config={"ops": {"filter_oracle_agreement": {"config": config}}})
            assert result.success and srv.request_count >= 12
    meta = _meta(result, "filter_oracle_agreement")
    assert meta["compared"] is True and 0 < meta["documents_compared"] <= 12
    assert all(f"| {d} " in meta["per_dimension"] for d in dims)
    saved = json.loads((data_dir / "filters" / "datasets" / "educational_value_ground_truth_v1" /
                        "oracle_agreement.json").read_text())
    assert set(saved["dimensions"]) == set(dims) and saved["oracle_b"]["model"] == "fake-b"
