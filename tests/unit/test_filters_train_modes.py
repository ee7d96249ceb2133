"""The other training modes (full fine-tune, the seed's LoRA sequence-classification path) run end to end on
a few documents, their model folders load in the scorer, and shards fan out through a ``.map`` runner."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillery_assets.filters.embed import EMBEDDED_ENCODER, resolve_encoder
from distillery_assets.filters.train import FilterTrainConfig, JudgeSettings, load_split, train_filter
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
    assert (default.mode, default.learning_rate, default.epochs) == ("frozen_head", 3e-4, 20)
    with pytest.raises(ValueError, match="extra"):
        FilterTrainConfig(epoch=3)


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
