"""The shipped labels sample with real signal (data/filters/passage_voice/v1) through the filter's own steps, as
the assets run them (candidates -> prefilter -> labels joined to documents -> stratified splits -> the training
step with the version's config): the default recipe's test MAE is below ridge's and the mean predictor's, every
candidate is in the table, and the kept model loads as a scorer that reproduces its test predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillery_assets.filters import ground_truth as gt_lib
from distillery_assets.filters import pipeline
from distillery_assets.filters.config import load_filter
from distillery_assets.filters.paths import FilterPaths
from distillery_assets.filters.splits import write_splits
from distillery_assets.io import atomic_write_jsonl, read_jsonl
from tests.support.filters_sample import DIMS, SAMPLE, passages, sample_rows


def test_the_shipped_labels_are_the_documented_functions_of_the_text():
    articles, labels = sample_rows(passages())
    assert read_jsonl(SAMPLE / "articles.jsonl") == articles
    assert read_jsonl(SAMPLE / "labels.jsonl") == labels
    assert len(labels) == 600
    for dim in DIMS:  # every dimension varies (signal to learn), none is constant
        values = [r["scores"][dim] for r in labels]
        assert len(set(values)) >= 5 and np.std(values) > 2.0, dim


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    torch.set_num_threads(2)
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("sample_data")
    mp.setenv("DISTILLERY_DATA_DIR", str(root))
    try:
        defn = load_filter(SAMPLE)
        paths = FilterPaths.of(defn.name, defn.version)
        cands = gt_lib.candidates(defn, pipeline.SourceLocator())
        pre = gt_lib.prefilter(defn, cands.documents)
        gt = gt_lib.label(defn, pre.passed, blocked={d.id: d.reason for d in pre.decisions if not d.passed})
        atomic_write_jsonl(paths.labels, gt.records)
        write_splits(gt.records, defn, paths.splits_dir)
        spec = pipeline.train_spec(defn, paths)
        result = spec.run(root)
        yield defn, paths, gt, spec, result
    finally:
        mp.undo()


def test_default_recipe_beats_ridge_and_the_mean_on_the_sample(trained):
    defn, paths, gt, spec, result = trained
    # the labels are joined to the documents the prefilter passed: the 4 it blocks are named rejects
    assert len(gt.records) == 596 and len(gt.rejects) == 4
    assert {r["reason"] for r in gt.rejects} == {"blocked_by_prefilter"}
    assert spec.config.mode == "auto" and spec.config.candidates is None  # the default recipe, not a pick
    model, mean, ridge = (result.test[k]["mae"] for k in ("model", "mean", "ridge"))
    table = [(c.name, c.status, c.val_mae, c.test_mae, c.best_epoch, c.epochs_run) for c in result.candidates]
    assert model < ridge < mean, table
    assert result.mode != "ridge"  # a learned head won on validation, and it holds on test
    by_name = {c.name: c for c in result.candidates}
    assert {"ridge", "mlp", "full_finetune", "lora"} <= set(by_name)
    assert by_name["full_finetune"].status == "skipped" and "candidates" in by_name["full_finetune"].note
    kept = [c for c in result.candidates if c.kept]
    assert len(kept) == 1 and kept[0].name == result.mode
    assert kept[0].val_mae == min(c.val_mae for c in result.candidates if c.status == "trained")
    assert kept[0].test_mae == pytest.approx(model, abs=1e-6)
    assert by_name["ridge"].test_mae == pytest.approx(ridge, abs=1e-6)
    assert result.include_title is False and result.include_title_reason == "configured"
    # early stopping on validation: the MLP stopped before its epoch limit, at most `patience` after its best
    mlp = by_name["mlp"]
    assert mlp.epochs_run < mlp.max_epochs and mlp.epochs_run - mlp.best_epoch == 15
    assert all("train_pass_seconds" in h for h in mlp.history)


def test_the_kept_model_is_the_scorer(trained):
    from distillery_assets.filters.score import Scorer

    defn, paths, gt, spec, result = trained
    scorer = Scorer(paths.model_dir)
    assert scorer.meta["mode"] == result.mode and scorer.include_title is False
    rows = {r["id"]: r for r in read_jsonl(paths.split_file("test"))}
    texts = [scorer.text_of(rows[i]) for i in result.test_predictions.ids]
    np.testing.assert_allclose(scorer.predict(texts), np.asarray(result.test_predictions.predictions["model"]),
                               atol=1e-3)
    meta = json.loads(paths.training_metadata.read_text())
    assert meta["training_mode"] == result.mode and meta["recipe"] == "auto"
    assert {c["name"] for c in meta["candidates"]} >= {"ridge", "mlp"}
