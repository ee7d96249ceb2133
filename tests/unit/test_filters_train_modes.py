"""The other training modes (full fine-tune, the seed's LoRA sequence-classification path) run end to end on
a few documents, their model folders load in the scorer, and shards fan out through a ``.map`` runner."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillery_assets.filters.embed import EMBEDDED_ENCODER, resolve_encoder
from distillery_assets.filters.train import RECOMMENDED_LR, FilterTrainConfig, JudgeSettings, load_split, train_filter
from tests.support.filters_train import DIMS, TIERS, WEIGHTS, write_made_splits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("filters_modes")
    paths = write_made_splits(root / "splits", n=40)
    return root, {k: load_split(p, DIMS) for k, p in paths.items()}


@pytest.mark.parametrize("mode,changes", [
    ("full_finetune", {"learning_rate": 5e-5}),
    ("lora", {"base_model": str(resolve_encoder(EMBEDDED_ENCODER)), "lora_targets": ["query", "value"],
              "learning_rate": 1e-3, "pad_to_max_length": False}),
])
def test_mode_trains_saves_and_scores(tiny, mode, changes):
    from distillery_assets.filters.score import Scorer

    root, splits = tiny
    cfg = FilterTrainConfig(mode=mode, max_length=64, epochs=2, batch_size=8, threads=1, **changes)
    out = root / mode
    result = train_filter(cfg, splits["train"], splits["val"], splits["test"], DIMS, out,
                          judge=JudgeSettings(WEIGHTS, TIERS), filter_name="t", filter_version="1")
    assert result.mode == mode and len(result.history) == 2
    assert 0 < result.num_trainable_parameters < result.num_parameters or mode == "full_finetune"
    assert set(result.test) == {"model", "mean", "ridge"}
    meta = json.loads((out / "training_metadata.json").read_text())
    assert meta["training_mode"] == mode
    scorer = Scorer(out / "model")
    pred = scorer.predict([e.text for e in splits["test"]])
    np.testing.assert_allclose(pred, np.asarray(result.test_predictions.predictions["model"]), atol=1e-3)


def test_default_recipe_and_unknown_fields():
    default = FilterTrainConfig()
    assert default.lora_targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert default.mode == "auto" and default.candidates is None
    assert default.planned("cpu")[0] == ["ridge", "mlp"] and "full_finetune" in default.planned("cpu")[1]
    assert default.planned("cuda")[0] == ["ridge", "mlp", "full_finetune"]
    assert FilterTrainConfig(candidates=["lora", "ridge"]).planned("cpu") == (["ridge", "lora"], {})
    assert (default.lr_for("full_finetune"), default.lr_for("mlp")) == (RECOMMENDED_LR["full_finetune"], 1e-3)
    single = FilterTrainConfig(mode="full_finetune", learning_rate=1e-4, epochs=3)
    assert single.planned("cpu") == (["full_finetune"], {}) and single.lr_for("full_finetune") == 1e-4
    with pytest.raises(ValueError, match="extra"):
        FilterTrainConfig(epoch=3)
    with pytest.raises(ValueError, match="learning_rates / max_epochs by candidate"):
        FilterTrainConfig(learning_rate=1e-3)
    with pytest.raises(ValueError, match="mode 'auto' only"):
        FilterTrainConfig(mode="lora", candidates=["ridge"])
    with pytest.raises(ValueError, match="not gradient candidates"):
        FilterTrainConfig(learning_rates={"ridge": 1.0})


def test_ridge_alone_is_a_loadable_scorer(tiny):
    from distillery_assets.filters.score import Scorer

    root, splits = tiny
    cfg = FilterTrainConfig(candidates=["ridge"], max_length=64, threads=1, score_min=0, score_max=10)
    out = root / "ridge"
    result = train_filter(cfg, splits["train"], splits["val"], splits["test"], DIMS, out,
                          judge=JudgeSettings(WEIGHTS, TIERS), filter_name="t", filter_version="1")
    assert result.mode == "ridge" and result.history == [] and result.best_epoch == 0
    np.testing.assert_allclose(result.test_predictions.predictions["model"],
                               result.test_predictions.predictions["ridge"])
    scorer = Scorer(out / "model")
    assert scorer.meta["mode"] == "ridge"
    np.testing.assert_allclose(scorer.predict([e.content for e in splits["test"]]),
                               np.asarray(result.test_predictions.predictions["model"]), atol=1e-3)
    assert json.loads((out / "training_history.json").read_text()) == []


def test_an_epoch_encodes_the_training_split_once(tiny, monkeypatch):
    """Training-split metrics come from the training pass: per epoch each training example goes through the
    model once (and validation once), never a second time for metrics."""
    from distillery_assets.filters import train as T

    root, splits = tiny
    seen = []
    original = T.FullFinetune.inputs

    def spy(self, split, idx):
        seen.append((split, len(list(idx))))
        return original(self, split, idx)

    monkeypatch.setattr(T.FullFinetune, "inputs", spy)
    cfg = FilterTrainConfig(mode="full_finetune", max_length=64, epochs=2, batch_size=8, threads=1)
    result = train_filter(cfg, splits["train"], splits["val"], splits["test"], DIMS, root / "once",
                          judge=JudgeSettings(WEIGHTS, TIERS), filter_name="t", filter_version="1")
    per_split = {k: sum(n for s, n in seen if s == k) for k in ("train", "val", "test")}
    assert per_split["train"] == 2 * len(splits["train"])  # two epochs, one pass each
    assert per_split["val"] == (2 + 1) * len(splits["val"])  # each epoch, then the kept model once more
    assert per_split["test"] == len(splits["test"])
    assert all(h["train_pass_seconds"] <= h["seconds"] for h in result.history)


def test_include_title_follows_config_file_names_or_validation(tiny):
    from distillery_assets.filters.train import FilterExample, choose_include_title, targets, titles_look_like_file_names

    assert titles_look_like_file_names(["pg624.txt", "pg61.txt", "Herland"])
    assert titles_look_like_file_names(["chunk_0001", "chunk_0002"])
    assert not titles_look_like_file_names(["Looking Backward, 2000 to 1887", "Herland", "pg61.txt"])
    assert not titles_look_like_file_names(["", ""])
    root, splits = tiny

    def titled(names):
        return {k: [FilterExample(e.id, names[i % len(names)], e.content, e.labels) for i, e in enumerate(v)]
                for k, v in splits.items()}

    y = {k: targets(v) for k, v in splits.items()}
    cfg = FilterTrainConfig(max_length=64, threads=1)
    include, why, feats = choose_include_title(cfg, titled(["notes_01.txt", "notes_02.txt"]), "cpu", None, y)
    assert (include, feats) == (False, None) and "file names" in why
    include, why, _ = choose_include_title(cfg.model_copy(update={"include_title": True}), splits, "cpu", None, y)
    assert (include, why) == (True, "configured")
    include, why, feats = choose_include_title(cfg, titled(["The Red Planet", "A Quiet Street"]), "cpu", None, y)
    assert why.startswith("ridge validation MAE") and feats is not None and isinstance(include, bool)
    assert feats.vectors["train"].shape == (len(splits["train"]), 384)


def test_modal_map_runner_fans_out_and_keeps_order(tiny, tmp_path):
    from distillery_assets.filters import score as S

    calls = []

    class FakeFunction:  # modal.Function.map's shape: parallel iterables, outputs in input order
        def map(self, models, shards, options, order_outputs=True):
            calls.append(len(shards))
            return [[{"id": r["id"], "scores": {d: 1.0 for d in DIMS}} for r in shard]
                    for shard in shards]

    runner = S.modal_map_runner(FakeFunction(), "filters/t/v1/model", parallelism=3)
    rows = [{"id": f"d{i}", "text": f"text {i}"} for i in range(10)]
    run = S.score_dataset(rows, tmp_path / "out", runner=runner, dims=DIMS, shard_size=2,
                          rules=S.weighted_rules(dict(zip(DIMS, WEIGHTS, strict=True)), TIERS))
    assert calls == [3, 2] and run.shards == 5 and run.documents == 10
    ids = [json.loads(x)["id"] for x in (tmp_path / "out" / S.SCORES_FILE).read_text().splitlines()]
    assert ids == [r["id"] for r in rows]

    class Wrong(FakeFunction):
        def map(self, models, shards, options, order_outputs=True):
            return [[{"id": "other", "scores": {d: 1.0 for d in DIMS}} for _ in s] for s in shards]

    with pytest.raises(RuntimeError, match="was sent"):
        S.score_dataset(rows, tmp_path / "bad", runner=S.modal_map_runner(Wrong(), "m"), dims=DIMS,
                        rules=S.weighted_rules(dict(zip(DIMS, WEIGHTS, strict=True)), TIERS))
    assert not (tmp_path / "bad" / S.SCORES_FILE).exists()
