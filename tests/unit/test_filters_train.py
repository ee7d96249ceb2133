"""Filter scorer training, judging, scoring, report and card (issue 9): the labels-with-signal test and
the pieces around it. One small training run (200 made texts, MiniLM frozen, 128 tokens) is shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distillery_assets.filters import metrics as M
from distillery_assets.filters.baselines import MeanPredictor, RidgeBaseline
from distillery_assets.filters.embed import EmbeddingCache, embed_texts, text_key
from distillery_assets.filters.train import (
    HISTORY_FILE, METADATA_FILE, MODEL_DIR, FilterTrainConfig, TrainFilterSpec, load_split,
)
from distillery_assets.io import JsonlError
from tests.support.filters_train import DIMS, TIERS, WEIGHTS, write_made_splits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("filters_train")
    write_made_splits(root / "splits", n=200)
    spec = TrainFilterSpec(
        filter_name="signal", filter_version="1", dimension_names=DIMS, weights=WEIGHTS, tiers=TIERS,
        threshold=3.0, train="splits/train.jsonl", val="splits/val.jsonl", test="splits/test.jsonl",
        version_dir="signal/v1", embed_cache="embeddings",
        config=FilterTrainConfig(max_length=128, score_min=0, score_max=10, threads=1))
    return root, spec, spec.run(root)


def test_labels_with_signal_beat_the_mean_predictor(trained):
    root, spec, result = trained
    model, mean, ridge = (result.test[k]["mae"] for k in ("model", "mean", "ridge"))
    assert model < 0.6 * mean, result.test
    assert ridge < mean
    assert set(result.test) == {"model", "mean", "ridge"}
    assert result.test["model"]["tier_accuracy"] > result.test["mean"]["tier_accuracy"]
    assert result.beats_mean
    # the table has every baseline on the same test rows
    preds = result.test_predictions
    assert set(preds.predictions) == {"model", "mean", "ridge"}
    assert all(len(v) == len(preds.ids) == result.test_examples for v in preds.predictions.values())
    md = M.results_markdown(result.test, DIMS)
    assert "| ridge |" in md and "| mean |" in md
    # narrow enough for the metadata column: the overall figures per model, then one row per dimension
    overall, per_dim = md.split("\n\n")
    assert all(f"{d} MAE" not in overall for d in DIMS)
    assert [line.split("|")[1].strip() for line in per_dim.splitlines()[2:]] == list(DIMS)
    assert per_dim.splitlines()[0].count("|") == 2 + len(result.test)


def test_history_metadata_and_model_folder_are_the_seeds(trained):
    root, spec, result = trained
    version = root / "signal" / "v1"
    history = json.loads((version / HISTORY_FILE).read_text())
    assert result.recipe == "auto" and result.mode in ("ridge", "mlp")
    mlp = next(c for c in result.candidates if c.name == "mlp")
    assert mlp.status == "trained" and mlp.history and mlp.epochs_run <= mlp.max_epochs
    assert [h["epoch"] for h in mlp.history] == list(range(1, mlp.epochs_run + 1))
    for split in ("train", "val"):
        keys = set(mlp.history[0][split])
        assert {"loss", "mae", "rmse"} <= keys
        assert {f"{d}_mae" for d in DIMS} | {f"{d}_rmse" for d in DIMS} <= keys
    best = min(mlp.history, key=lambda h: h["val"]["mae"])
    assert mlp.best_epoch == best["epoch"] and mlp.val_mae == pytest.approx(best["val"]["mae"])
    assert history == (mlp.history if result.mode == "mlp" else [])  # the seed's file: the kept candidate's epochs
    assert result.best_val_mae == min(c.val_mae for c in result.candidates if c.status == "trained")
    assert result.include_title is False and "no document has a title" in result.include_title_reason
    meta = json.loads((version / METADATA_FILE).read_text())
    for key in ("filter_name", "filter_version", "dimension_names", "num_dimensions", "model_name",
                "num_parameters", "num_trainable_parameters", "epochs", "batch_size", "learning_rate",
                "max_length", "warmup_steps", "train_examples", "val_examples", "best_val_mae"):
        assert key in meta, key
    # frozen encoder: only the head trains (ridge: 384 x 3 + 3; the MLP: 384 x 256 + 256 + 256 x 3 + 3)
    assert meta["num_trainable_parameters"] == {"ridge": 384 * 3 + 3, "mlp": 384 * 256 + 256 + 256 * 3 + 3}[result.mode]
    assert {c["name"] for c in meta["candidates"]} == {"ridge", "mlp", "full_finetune", "lora"}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "head.safetensors", "filter_model.json"):
        assert (version / MODEL_DIR / name).exists(), name
    again = spec.run(root)
    assert again.reused and again.fingerprint == result.fingerprint


def test_scorer_reproduces_the_best_epoch_and_int8_stays_close(trained):
    from distillery_assets.filters.score import Scorer

    root, spec, result = trained
    rows = [json.loads(line) for line in (root / "splits" / "test.jsonl").read_text().splitlines()]
    texts = [r["content"] for r in rows]
    fp32 = Scorer(root / "signal" / "v1" / MODEL_DIR).predict(texts)
    np.testing.assert_allclose(fp32, np.asarray(result.test_predictions.predictions["model"]), atol=1e-4)
    int8 = Scorer(root / "signal" / "v1" / MODEL_DIR, quantize="int8").predict(texts)
    y = np.asarray([r["labels"] for r in rows])
    assert np.mean(np.abs(int8 - y)) < 1.2 * np.mean(np.abs(fp32 - y))


def test_score_dataset_streams_shards_and_resumes(trained, tmp_path):
    from distillery_assets.filters import score as S

    root, spec, result = trained
    rows = [json.loads(line) for line in (root / "splits" / "test.jsonl").read_text().splitlines()]
    model_dir = root / "signal" / "v1" / MODEL_DIR
    calls = []
    inner = S.in_process_runner(model_dir)

    def runner(wave):
        calls.append(len(wave))
        return inner(wave)

    def rules(scores, text):  # a capping rule shaped like filters-lib's ScoreResult mapping
        overall = sum(scores[d] * w for d, w in zip(DIMS, WEIGHTS, strict=True))
        applied = ["gatekeeper:society"] if scores["society"] < 2 else []
        overall = min(overall, 2.0) if applied else overall
        return {"overall": overall, "tier": M.tier_of(overall, TIERS), "applied": applied}

    out = tmp_path / "scores"
    first = S.score_dataset(rows, out, runner=runner, rules=rules, dims=DIMS, shard_size=7)
    assert first.documents == 20 and first.shards == 3 and first.shards_scored == 3 and first.docs_per_s > 0
    lines = [json.loads(x) for x in (out / S.SCORES_FILE).read_text().splitlines()]
    assert [r["id"] for r in lines] == [r["id"] for r in rows]
    assert all(set(r) == {"id", "scores", "overall", "tier", "applied"} for r in lines)
    assert sum(first.tiers.values()) == 20
    capped = [r for r in lines if r["applied"]]
    assert all(r["overall"] <= 2.0 for r in capped)
    # a rerun scores nothing; a changed row re-scores its shard only
    calls.clear()
    second = S.score_dataset(rows, out, runner=runner, rules=rules, dims=DIMS, shard_size=7)
    assert second.shards_reused == 3 and second.shards_scored == 0 and calls == []
    rows[8] = {**rows[8], "content": rows[8]["content"] + " More."}
    third = S.score_dataset(rows, out, runner=runner, rules=rules, dims=DIMS, shard_size=7)
    assert third.shards_scored == 1 and third.shards_reused == 2
    # the shard function is pure: the same rows give the same scores
    assert S.score_shard(model_dir, [{"id": "a", "text": rows[0]["content"]}])[0]["scores"] == lines[0]["scores"]


def test_report_plots_docx_and_card(trained, tmp_path):
    from docx import Document

    from distillery_assets.filters.card import render_filter_card
    from distillery_assets.filters.report import (
        PLOTS, SUMMARY, CostLine, Levels, ReportInputs, cost_per_1000, write_docx, write_plots,
    )

    root, spec, result = trained
    history = next(c for c in result.candidates if c.name == "mlp").history
    preds = result.test_predictions
    plots = write_plots(history, DIMS, tmp_path / "plots", title="signal v1", levels=Levels(2.0, 1.5),
                        test=(preds.target, preds.predictions["model"]), curve_of="mlp")
    for name in (*PLOTS, SUMMARY):
        assert plots[name].exists() and plots[name].stat().st_size > 0
    assert (tmp_path / "plots" / PLOTS[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best epoch" in (tmp_path / "plots" / SUMMARY).read_text()
    meta = json.loads((root / "signal" / "v1" / METADATA_FILE).read_text())
    oracle = cost_per_1000(provider="openai", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=150)
    assert oracle == pytest.approx((1000 * 0.15 + 150 * 0.60) / 1e6 * 1000)
    dims = [(d, w, f"{d} keywords") for d, w in zip(DIMS, WEIGHTS, strict=True)]
    inputs = ReportInputs("signal", "1", "Keyword-signal test filter.", dims, TIERS, history, meta, result.test,
                          tmp_path / "plots", oracle="keyword counts",
                          costs=[CostLine("oracle gpt-4o-mini", oracle), CostLine("scorer (CPU)", 0.0, 20.0)])
    path = write_docx(inputs, tmp_path / "signal_v1_training_report.docx")
    doc = Document(str(path))
    headings = [p.text for p in doc.paragraphs if p.style.name.startswith("Heading")]
    for wanted in ("Summary", "Filter architecture", "Method", "Results", "Conclusions", "Cost"):
        assert wanted in headings
    assert len(doc.inline_shapes) == 4
    cells = {c.text for t in doc.tables for row in t.rows for c in row.cells}
    assert {"mean", "ridge", "society", "mlp", "kept", "skipped"} <= cells
    text = "\n".join(p.text for p in doc.paragraphs)
    assert "below the mean predictor" in text and "None" not in text
    assert ("learned from the labels" in text) == (result.mode != "ridge" and
                                                   result.test["model"]["mae"] < result.test["ridge"]["mae"])
    assert any("0.82" in p.text for p in doc.paragraphs)
    card = render_filter_card(repo_id="me/signal-v1", filter_name="signal", filter_version="1",
                              description="test", dims=dims, tiers=TIERS, metadata=meta, results=result.test)
    assert card.startswith("---") and "| ridge |" in card and "pipeline_tag: text-classification" in card
    assert "sentence-transformers/all-MiniLM-L6-v2" in card
    # rendered by the one card renderer: the results are the Evaluation section, the scorer's own loading code
    # replaces the GGUF/adapter instructions
    evaluation = card.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    assert "| ridge |" in evaluation and "No evaluation metrics" not in card
    assert "## Use it" in card and "Scorer(" in card and "llama-cli" not in card and "Built by" in card


def test_load_split_names_file_line_and_field(tmp_path):
    good = {"id": "a", "title": "T", "content": "x", "labels": [1, 2, 3], "dimension_names": DIMS}
    cases = {
        "malformed": ('{"id": "a",\n', "malformed JSONL"),
        "short": (json.dumps({**good, "labels": [1, 2]}) + "\n", "field 'labels'"),
        "names": (json.dumps({**good, "dimension_names": ["a", "b", "c"]}) + "\n", "field 'dimension_names'"),
        "nan": (json.dumps({**good, "labels": [1, "x", 3]}) + "\n", "non-number"),
        "missing": (json.dumps({**good, "labels": {"society": 1}}) + "\n", "misses dimension"),
    }
    for name, (body, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(good) + "\n" + body)
        with pytest.raises(JsonlError) as err:
            load_split(path, DIMS)
        assert err.value.line == 2 and message in str(err.value) and name in str(err.value.path)
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({**good, "labels": {"society": 1, "science_space": 2, "mind_games": 3}}) + "\n")
    ex = load_split(ok, DIMS)[0]
    assert ex.labels == (1.0, 2.0, 3.0) and ex.text == "T\n\nx"


def test_metrics_by_hand():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[1.0, 4.0], [5.0, 4.0]])
    m = M.regression_metrics(pred, target, ["a", "b"])
    assert m["mae"] == 1.0 and m["a_mae"] == 1.0 and m["b_mae"] == 1.0 and m["loss"] == 2.0
    assert m["a_rmse"] == pytest.approx(np.sqrt(2))
    tiers = {"low": 0.0, "high": 7.0, "mid": 4.0}
    assert M.tier_of(7.0, tiers) == "high" and M.tier_of(6.99, tiers) == "mid" and M.tier_of(-1, tiers) == "low"
    b = M.binary_at([8, 8, 1, 1], [8, 1, 8, 1], threshold=7)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    assert M.binary_at([0, 0], [0, 0], 5)["f1"] == 0.0
    overall = M.weighted_overall({"a": 0.25, "b": 0.75}, ["a", "b"])
    np.testing.assert_allclose(overall(pred), [1.75, 3.75])
    with pytest.raises(ValueError, match="no weight"):
        M.weighted_overall({"a": 1.0}, ["a", "b"])


def test_baselines_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    y = np.c_[x @ [1, 2, 0, 0, 0], x @ [0, 0, 1, 0, 0]] + 5
    mean = MeanPredictor.fit(y[:60])
    assert mean.predict(3).shape == (3, 2)
    ridge = RidgeBaseline.fit(x[:60], y[:60], x[60:70], y[60:70], clip=(0, 10))
    assert ridge.alpha in ridge.val_mae_by_alpha
    assert np.mean(np.abs(ridge.predict(x[70:]) - y[70:])) < np.mean(np.abs(mean.predict(10) - y[70:]))


def test_embedding_cache_computes_each_text_once(tmp_path):
    class FakeEncoder:
        identity, max_length, dim = "fake", 128, 4

        def __init__(self):
            self.seen = []

        def encode(self, texts, batch_size=32):
            self.seen.extend(texts)
            return np.asarray([[len(t), 1, 2, 3] for t in texts], dtype=np.float32)

    enc = FakeEncoder()
    cache = EmbeddingCache(tmp_path / "emb")
    first = embed_texts(["aa", "b", "aa"], enc, cache)
    assert enc.seen == ["aa", "b"] and first[:, 0].tolist() == [2, 1, 2]
    again = embed_texts(["b", "ccc"], enc, EmbeddingCache(tmp_path / "emb"))  # a fresh process reads the shards
    assert enc.seen == ["aa", "b", "ccc"] and again[:, 0].tolist() == [1, 3]
    assert not list((tmp_path / "emb").glob(".tmp-*"))
    assert text_key("x", "fake", 128) != text_key("x", "fake", 256) != text_key("x", "other", 128)
