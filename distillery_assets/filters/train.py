"""Train a filter's scorer: a regressor from document text to one score per dimension.

Three modes (:data:`MODES`, a small class each: how it builds, feeds and saves the scorer), one loop, one
output layout:

* ``frozen_head`` (the offline default, FineWeb-Edu's recipe): the shipped all-MiniLM-L6-v2 encoder is
  frozen, documents are embedded once (mean pooled, cached by text hash, :mod:`.embed`) and only a linear
  regression head is trained (AdamW lr 3e-4, 20 epochs).
* ``full_finetune``: the same encoder + head, every weight trained on tokenized text.
* ``lora``: the seed's GPU recipe. ``AutoModelForSequenceClassification(num_labels=<dims>,
  problem_type="regression")`` on Qwen2.5 0.5B/1.5B with LoRA r16/alpha 32/dropout .05 on every
  projection (q,k,v,o,gate,up,down), max length 512, AdamW 2e-5, 500 warmup steps, clip 1.0
  (those fields of ``FilterTrainConfig``; 3 epochs of batch 8). Runs through ``ComputeResource.run_step(TrainFilterSpec)``.

Why not ``training.loop.train_loop``: that loop trains causal LMs on token ids with a token-weighted NLL
and validates by NLL; a scorer's loss is MSE on float targets, its validation is MAE/RMSE per dimension
and the best epoch (by val MAE) must be kept. The loop here is that regression loop, a screen long; its
seeding, device, optimizer (AdamW) and schedule are the shared ones (``training.loop``, ``device.pick_device``).

Per epoch, on train and val: ``loss`` (MSE), ``mae``, ``rmse``, ``<dim>_mae``, ``<dim>_rmse``. The best
epoch by val MAE is saved to ``model/``; the test split is scored at the end, beside the mean predictor
and the ridge baseline on the same test rows. ``training_history.json`` (a list of ``{epoch, train,
val}``) and ``training_metadata.json`` are the seed's files, written beside ``model/``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery_assets.device import pick_device
from distillery_assets.filters import metrics as M
from distillery_assets.filters.baselines import MeanPredictor, RidgeBaseline
from distillery_assets.filters.embed import EMBEDDED_ENCODER, EmbeddingCache, Encoder, embed_texts, resolve_encoder
from distillery_assets.filters.sources import MODEL_SEP, document_text
from distillery_assets.io import JsonlError, atomic_path, atomic_write_text, iter_jsonl
from distillery_assets.steps import RelPath, StepResult, StepSpec, finished, step_fingerprint
from distillery_assets.training.loop import make_optimizer, make_scheduler, seed_torch

log = logging.getLogger(__name__)

MODEL_DIR = "model"
HISTORY_FILE = "training_history.json"
METADATA_FILE = "training_metadata.json"
SCORER_FILE = "filter_model.json"
"""Inside ``model/``: how to load the scorer (mode, dims, max length, pooling)."""
HEAD_FILE = "head.safetensors"
RESULT_FILE = "train_result.json"
"""Inside ``model/``: the step's result, reused when the fingerprint matches."""
SCORER_FORMAT = "distillery-filter-scorer/1"
QWEN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------------------------ config

class FilterTrainConfig(BaseModel):
    """How a scorer is trained. Defaults: the offline recipe (frozen MiniLM + head, lr 3e-4, 20 epochs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["frozen_head", "full_finetune", "lora"] = "frozen_head"
    base_model: str = EMBEDDED_ENCODER
    max_length: int = Field(default=256, ge=8, le=8192)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    lr_scheduler: str = "constant"
    """Constant for the head (label sets are thousands of rows, not FineWeb-Edu's 450k: a decaying rate
    stops the head before it fits); the LoRA recipe uses the seed's linear warmup schedule."""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    seed: int = 42
    head_dropout: float = Field(default=0.0, ge=0, lt=1)
    score_min: float | None = None
    score_max: float | None = None
    """Predictions are clipped to [score_min, score_max] (the dimensions' scale) when both are set."""
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: list(QWEN_PROJECTIONS))
    gradient_checkpointing: bool = True
    pad_to_max_length: bool = False
    """The seed pads every batch to max_length; padding to the longest in the batch gives the same numbers
    faster."""
    threads: int | None = Field(default=None, ge=1)
    device: str | None = None

    @model_validator(mode="after")
    def _check(self) -> FilterTrainConfig:
        if (self.score_min is None) != (self.score_max is None):
            raise ValueError("score_min and score_max go together")
        if self.score_min is not None and self.score_min >= self.score_max:
            raise ValueError("score_min must be below score_max")
        return self

    @property
    def clip(self) -> tuple[float, float] | None:
        return None if self.score_min is None else (float(self.score_min), float(self.score_max))

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"threads", "device"})


# -------------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class FilterExample:
    id: str
    text: str
    labels: tuple[float, ...]


def example_text(record: dict[str, Any]) -> str:
    """The model's input, as the seed builds it: the document's text with ``MODEL_SEP`` (``title\\n\\ncontent``)."""
    return document_text(record, MODEL_SEP)


def load_split(path: Path, dims: Sequence[str]) -> list[FilterExample]:
    """A split file in the seed's record format (``id``, ``title``, ``content``, ``labels`` in dimension
    order, ``dimension_names``). ``labels`` may also be an object by dimension name. A bad line raises
    an error naming the file, line and field."""
    path = Path(path)
    out: list[FilterExample] = []
    for line, record in iter_jsonl(path, on_error="raise"):
        names = record.get("dimension_names")
        if names is not None and list(names) != list(dims):
            raise JsonlError(path, line, f"field 'dimension_names' is {names}, expected {list(dims)}")
        raw = record.get("labels")
        if isinstance(raw, dict):
            missing = [d for d in dims if d not in raw]
            if missing:
                raise JsonlError(path, line, f"field 'labels' misses dimension(s) {missing}")
            raw = [raw[d] for d in dims]
        if not isinstance(raw, list) or len(raw) != len(dims):
            raise JsonlError(path, line, f"field 'labels' must hold {len(dims)} numbers (one per dimension)")
        try:
            labels = tuple(float(v) for v in raw)
        except (TypeError, ValueError) as exc:
            raise JsonlError(path, line, f"field 'labels' holds a non-number: {exc}") from exc
        if not all(math.isfinite(v) for v in labels):
            raise JsonlError(path, line, "field 'labels' holds a NaN or infinite value")
        text = example_text(record)
        if not text.strip():
            raise JsonlError(path, line, "field 'content' is empty")
        out.append(FilterExample(str(record.get("id", f"{path.name}:{line}")), text, labels))
    if not out:
        raise ValueError(f"{path}: the split holds no examples")
    return out


def targets(examples: Sequence[FilterExample]) -> np.ndarray:
    return np.asarray([e.labels for e in examples], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ models

class MeanPoolRegressor:
    """Encoder (AutoModel) + mean pooling + dropout + Linear head: the MiniLM scorer. A torch module is
    built lazily (torch is imported only when training or scoring)."""

    @staticmethod
    def build(encoder_model: Any, n_dims: int, dropout: float, normalize: bool = True) -> Any:
        import torch

        from distillery_assets.filters.embed import mean_pool

        class _Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = encoder_model
                self.dropout = torch.nn.Dropout(dropout)
                size = int(encoder_model.config.hidden_size)
                self.head = torch.nn.Linear(size, n_dims)
                self.normalize = normalize
                # features are standardised before the head (mean/std of the training embeddings): a unit
                # sentence vector has components ~0.05, too small for a head to move in a few hundred steps
                self.register_buffer("feature_mean", torch.zeros(size))
                self.register_buffer("feature_std", torch.ones(size))

            def embed(self, input_ids, attention_mask, **extra):
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
                return mean_pool(hidden, attention_mask, self.normalize)

            def forward(self, input_ids=None, attention_mask=None, embeddings=None, **extra):
                if embeddings is None:
                    embeddings = self.embed(input_ids, attention_mask, **extra)
                return self.head(self.dropout((embeddings - self.feature_mean) / self.feature_std))

        return _Module()


def _count(params: Any) -> int:
    return int(sum(p.numel() for p in params))


# ------------------------------------------------------------------------------------------------- modes

class ScorerMode:
    """One training mode: how it builds the scorer on ``device``, turns example indices into model inputs,
    reads predictions off the model and saves ``model/``. One instance per run holds that run's model."""

    name: ClassVar[str]

    def __init__(self, cfg: FilterTrainConfig, device: str):
        self.cfg, self.device = cfg, device
        self.base = self.resolve_base()
        self.model: Any = None
        self.tokenizer: Any = None
        self.texts: dict[str, list[str]] = {}
        self.embeddings: dict[str, np.ndarray] | None = None
        """The MiniLM sentence vectors of each split, when the mode computed them (the ridge baseline's too)."""

    def resolve_base(self) -> Path | str:
        return resolve_encoder(self.cfg.base_model)

    def build(self, texts: dict[str, list[str]], y_train: np.ndarray, n_dims: int,
              cache: EmbeddingCache | None) -> None:
        """Build ``self.model`` (on the device) and ``self.tokenizer`` for these split texts."""
        raise NotImplementedError

    def inputs(self, split: str, idx: Sequence[int]) -> dict[str, Any]:
        """The model's inputs for examples ``idx`` of ``split``: the texts tokenized, on the device."""
        cfg = self.cfg
        batch = self.tokenizer([self.texts[split][i] for i in idx], truncation=True, max_length=cfg.max_length,
                               padding="max_length" if cfg.pad_to_max_length else True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def forward(self, split: str, idx: Sequence[int]) -> Any:
        """Predicted scores (batch, dims) of examples ``idx`` of ``split``."""
        return self.model(**self.inputs(split, idx))

    def predict(self, split: str, batch_size: int) -> np.ndarray:
        """Every example of ``split`` scored in eval mode, clipped to the configured scale."""
        import torch

        n = len(self.texts[split])
        was = self.model.training
        self.model.eval()
        rows = []
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows.append(self.forward(split, range(start, min(n, start + batch_size))).float().cpu().numpy())
        if was:
            self.model.train()
        pred = np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        clip = self.cfg.clip
        return np.clip(pred, *clip) if clip else pred

    def ridge_features(self, cache: EmbeddingCache | None) -> dict[str, np.ndarray]:
        """The ridge baseline's features: the MiniLM vectors of each split (computed here if the mode had none)."""
        if self.embeddings is None:
            probe = Encoder(resolve_encoder(EMBEDDED_ENCODER), max_length=min(self.cfg.max_length, 256),
                            device=self.device)
            self.embeddings = {k: embed_texts(v, probe, cache, batch_size=64) for k, v in self.texts.items()}
        return self.embeddings

    def save(self, folder: Path) -> None:
        """The model's files in ``folder`` (``model/`` being written)."""
        raise NotImplementedError


class _MiniLMMode(ScorerMode):
    """The encoder + mean pooling + a linear head (:class:`MeanPoolRegressor`), features standardised by the
    training embeddings and the head started at the training mean: epoch 1 begins at the mean predictor."""

    def build(self, texts, y_train, n_dims, cache) -> None:
        import torch

        cfg, self.texts = self.cfg, texts
        encoder = Encoder(self.base, max_length=cfg.max_length, device=self.device)
        self.tokenizer = encoder.tokenizer
        module = MeanPoolRegressor.build(encoder.model, n_dims, cfg.head_dropout, encoder.normalize)
        self.embeddings = {k: embed_texts(v, encoder, cache, batch_size=64) for k, v in texts.items()}
        with torch.no_grad():
            module.feature_mean.copy_(torch.as_tensor(self.embeddings["train"].mean(0)))
            module.feature_std.copy_(torch.as_tensor(self.embeddings["train"].std(0) + 1e-6))
        self.prepare_encoder(module)
        self.model = module.to(self.device)
        with torch.no_grad():
            self.model.head.bias.copy_(torch.as_tensor(y_train.mean(0)))
            self.model.head.weight.mul_(0.1)

    def prepare_encoder(self, module: Any) -> None:
        """What the mode does to the encoder before training (freeze it, or checkpoint its gradients)."""

    def save_encoder(self, folder: Path) -> None:
        self.model.encoder.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))

    def save(self, folder: Path) -> None:
        """The encoder's files (config.json, model.safetensors, tokenizer) + ``head.safetensors``."""
        from safetensors.torch import save_file

        self.save_encoder(folder)
        model = self.model
        tensors = {"weight": model.head.weight, "bias": model.head.bias, "feature_mean": model.feature_mean,
                   "feature_std": model.feature_std}
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(folder / HEAD_FILE))


class FrozenHead(_MiniLMMode):
    """The encoder frozen; documents embedded once (cached) and only the head trained on the vectors."""

    name = "frozen_head"

    def build(self, texts, y_train, n_dims, cache) -> None:
        import torch

        super().build(texts, y_train, n_dims, cache)
        self.vectors = {k: torch.as_tensor(v, device=self.device) for k, v in self.embeddings.items()}

    def prepare_encoder(self, module: Any) -> None:
        for p in module.encoder.parameters():
            p.requires_grad_(False)

    def forward(self, split: str, idx: Sequence[int]) -> Any:
        return self.model(embeddings=self.vectors[split][list(idx)])

    def save_encoder(self, folder: Path) -> None:
        base = Path(str(self.base))
        if not base.is_dir():  # a Hub id: the encoder as transformers loaded it
            return super().save_encoder(folder)
        for item in base.iterdir():  # the untouched encoder: copy its files as they are
            if item.name in ("README.md",):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)


class FullFinetune(_MiniLMMode):
    """Every weight of the encoder and the head trained on tokenized text."""

    name = "full_finetune"

    def prepare_encoder(self, module: Any) -> None:
        if self.cfg.gradient_checkpointing and self.device == "cuda":
            module.encoder.gradient_checkpointing_enable()


class LoraRegressor(ScorerMode):
    """The seed's sequence-classification regressor with a LoRA adapter (the score head trained whole)."""

    name = "lora"

    def resolve_base(self) -> Path | str:
        cfg = self.cfg
        return resolve_encoder(cfg.base_model) if cfg.base_model == EMBEDDED_ENCODER else cfg.base_model

    def build(self, texts, y_train, n_dims, cache) -> None:
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        cfg, base, self.texts = self.cfg, str(self.base), texts
        tokenizer = AutoTokenizer.from_pretrained(base)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=n_dims, problem_type="regression")
        model.config.pad_token_id = tokenizer.pad_token_id
        if cfg.gradient_checkpointing and self.device == "cuda":
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=list(cfg.lora_targets))
        self.model, self.tokenizer = get_peft_model(model, lora).to(self.device), tokenizer

    def forward(self, split: str, idx: Sequence[int]) -> Any:
        return self.model(**self.inputs(split, idx)).logits

    def save(self, folder: Path) -> None:
        """The PEFT adapter + tokenizer."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


MODES: dict[str, type[ScorerMode]] = {m.name: m for m in (FrozenHead, FullFinetune, LoraRegressor)}
"""Every training mode by the name ``FilterTrainConfig.mode`` gives."""


# ------------------------------------------------------------------------------------------------ result

class TestPredictions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str]
    target: list[list[float]]
    predictions: dict[str, list[list[float]]]
    """By model name: ``model`` (the trained scorer), ``mean``, ``ridge``."""


class FilterTrainResult(StepResult):
    kind: Literal["train_filter"] = "train_filter"
    fingerprint: str
    filter_name: str
    filter_version: str
    mode: str
    base_model: str
    device: str
    dimension_names: list[str]
    best_epoch: int
    best_val_mae: float
    epochs_run: int
    train_examples: int
    val_examples: int
    test_examples: int
    num_parameters: int
    num_trainable_parameters: int
    history: list[dict[str, Any]]
    test: dict[str, dict[str, Any]]
    """Results table on the test split, by model name (``model``, ``mean``, ``ridge``): regression metrics,
    overall MAE, tier accuracy and the binary decision (weighted overall; :func:`judge_predictions`
    re-judges with the filter's own rules)."""
    ridge_alpha: float | None
    test_predictions: TestPredictions
    embed_cache: dict[str, Any] | None = None
    train_seconds: float
    wall_seconds: float
    model_dir: str
    """Relative to the step's root."""

    @property
    def beats_mean(self) -> bool:
        return self.test["model"]["mae"] < self.test["mean"]["mae"]


# -------------------------------------------------------------------------------------------------- train

EpochHook = Callable[[dict[str, Any]], None]


@dataclass
class JudgeSettings:
    """Plain data for the step's own judgement: weights in dimension order, tiers, binary threshold."""

    weights: Sequence[float]
    tiers: Sequence[tuple[str, float]]
    threshold: float | None = None


def train_filter(cfg: FilterTrainConfig, train: Sequence[FilterExample], val: Sequence[FilterExample],
                 test: Sequence[FilterExample], dims: Sequence[str], version_dir: Path, *, judge: JudgeSettings,
                 filter_name: str, filter_version: str, cache: EmbeddingCache | None = None,
                 fingerprint: str = "", model_dir_rel: str = MODEL_DIR, on_epoch: EpochHook | None = None,
                 ) -> FilterTrainResult:
    """Train, keep the best epoch by val MAE in ``version_dir/model``, score the test split with the
    baselines, and write the seed's ``training_history.json`` / ``training_metadata.json``."""
    import torch

    wall = time.perf_counter()
    dims = list(dims)
    if len(judge.weights) != len(dims):
        raise ValueError(f"{len(judge.weights)} weights for {len(dims)} dimensions")
    for name, split in (("train", train), ("val", val), ("test", test)):
        if not split:
            raise ValueError(f"the {name} split is empty")
        bad = [e.id for e in split if len(e.labels) != len(dims)]
        if bad:
            raise ValueError(f"{name} split: example(s) {bad[:3]} do not have {len(dims)} labels")
    seed_torch(cfg.seed, cfg.threads)
    mode = MODES[cfg.mode](cfg, pick_device(cfg.device))
    device = mode.device
    splits = {"train": list(train), "val": list(val), "test": list(test)}
    y = {k: targets(v) for k, v in splits.items()}
    mode.build({k: [e.text for e in v] for k, v in splits.items()}, y["train"], len(dims), cache)
    model = mode.model
    y_t = {k: torch.as_tensor(v, device=device) for k, v in y.items()}

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total = math.ceil(len(train) / cfg.batch_size) * cfg.epochs
    scheduler = make_scheduler(optimizer, cfg.lr_scheduler, total, warmup_ratio=cfg.warmup_ratio,
                               warmup_steps=cfg.warmup_steps)
    eval_batch = max(cfg.batch_size, 64)

    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    rng = random.Random(cfg.seed)
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = torch.nn.functional.mse_loss(mode.forward("train", idx).float(), y_t["train"][idx])
            if not torch.isfinite(loss):  # the seed skips NaN-loss batches; so do we, and say so
                log.warning("epoch %d: skipped a batch with a non-finite loss", epoch)
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                continue
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        record = {"epoch": epoch}
        for split in ("train", "val"):
            record[split] = M.regression_metrics(mode.predict(split, eval_batch), y[split], dims)
        history.append(record)
        log.info("epoch %d: train MAE %.4f val MAE %.4f", epoch, record["train"]["mae"], record["val"]["mae"])
        if best is None or record["val"]["mae"] < best[0]:
            best = (record["val"]["mae"], epoch, _trainable_state(model))
        if on_epoch is not None:
            on_epoch(record)
    train_seconds = time.perf_counter() - started
    assert best is not None
    _load_trainable_state(model, best[2])

    # ---- test: the scorer and the baselines on the same rows
    pred_test = mode.predict("test", eval_batch)
    mean = MeanPredictor.fit(y["train"])
    features = mode.ridge_features(cache)
    ridge = RidgeBaseline.fit(features["train"], y["train"], features["val"], y["val"], clip=cfg.clip)
    predictions = {"model": pred_test, "mean": mean.predict(len(test)), "ridge": ridge.predict(features["test"])}
    overall = M.weighted_overall(judge.weights)
    table = {name: M.judge(p, y["test"], dims, overall=overall, tiers=judge.tiers, threshold=judge.threshold)
             for name, p in predictions.items()}

    # ---- write model/, history, metadata (each atomically; model/ as one folder)
    version_dir = Path(version_dir)
    n_params = _count(model.parameters())
    n_train = _count(trainable)
    result = FilterTrainResult(
        fingerprint=fingerprint, filter_name=filter_name, filter_version=str(filter_version), mode=cfg.mode,
        base_model=cfg.base_model, device=device, dimension_names=dims, best_epoch=best[1], best_val_mae=best[0],
        epochs_run=len(history), train_examples=len(train), val_examples=len(val), test_examples=len(test),
        num_parameters=n_params, num_trainable_parameters=n_train, history=history, test=table,
        ridge_alpha=ridge.alpha,
        test_predictions=TestPredictions(ids=[e.id for e in test], target=y["test"].tolist(),
                                         predictions={k: np.asarray(v).tolist() for k, v in predictions.items()}),
        embed_cache=cache.stats.as_dict() if cache is not None else None,
        train_seconds=round(train_seconds, 3), wall_seconds=round(time.perf_counter() - wall, 3),
        model_dir=model_dir_rel,
    )
    scorer_meta = {"format": SCORER_FORMAT, "mode": cfg.mode, "base_model": cfg.base_model,
                   "dimension_names": dims, "max_length": cfg.max_length, "pooling": "mean",
                   "normalize": True, "clip": list(cfg.clip) if cfg.clip else None, "head": HEAD_FILE,
                   "filter_name": filter_name, "filter_version": str(filter_version), "fingerprint": fingerprint}
    with atomic_path(version_dir / MODEL_DIR, is_dir=True) as tmp:
        mode.save(tmp)
        atomic_write_text(tmp / SCORER_FILE, json.dumps(scorer_meta, indent=2))
        atomic_write_text(tmp / RESULT_FILE, result.record_json())
    atomic_write_text(version_dir / HISTORY_FILE, json.dumps(history, indent=2))
    atomic_write_text(version_dir / METADATA_FILE, json.dumps(training_metadata(cfg, result), indent=2))
    return result


def training_metadata(cfg: FilterTrainConfig, result: FilterTrainResult) -> dict[str, Any]:
    """The seed's ``training_metadata.json`` fields, then what this platform adds."""
    return {
        "filter_name": result.filter_name, "filter_version": result.filter_version,
        "dimension_names": result.dimension_names, "num_dimensions": len(result.dimension_names),
        "model_name": cfg.base_model, "num_parameters": result.num_parameters,
        "num_trainable_parameters": result.num_trainable_parameters, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "max_length": cfg.max_length,
        "warmup_steps": cfg.warmup_steps, "train_examples": result.train_examples,
        "val_examples": result.val_examples, "best_val_mae": result.best_val_mae,
        # platform additions
        "training_mode": cfg.mode, "test_examples": result.test_examples, "best_epoch": result.best_epoch,
        "device": result.device, "fingerprint": result.fingerprint, "config": cfg.fingerprint(),
        "test_mae": result.test["model"]["mae"], "test_rmse": result.test["model"]["rmse"],
        "baseline_test_mae": {k: v["mae"] for k, v in result.test.items() if k != "model"},
        "ridge_alpha": result.ridge_alpha, "train_seconds": result.train_seconds,
    }


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    import torch

    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            named[name].copy_(value.to(named[name].device))


def judge_predictions(preds: TestPredictions, dims: Sequence[str], *, overall: M.OverallFn,
                      tiers: Sequence[tuple[str, float]], threshold: float | None = None) -> dict[str, dict[str, Any]]:
    """The results table again from recorded test predictions, with another overall rule (the filter's
    caps and gatekeepers): ``overall`` maps an (n, dims) matrix to n overall scores."""
    target = np.asarray(preds.target)
    return {name: M.judge(np.asarray(p), target, dims, overall=overall, tiers=tiers, threshold=threshold)
            for name, p in preds.predictions.items()}


# --------------------------------------------------------------------------------------------- the step

class TrainFilterSpec(StepSpec[FilterTrainResult]):
    """Train a filter's scorer on its splits; ``version_dir`` gets ``model/``, ``training_history.json``
    and ``training_metadata.json``. Run it with ``ComputeResource.run_step`` (local or Modal)."""

    kind: Literal["train_filter"] = "train_filter"
    config: FilterTrainConfig = FilterTrainConfig()
    filter_name: str
    filter_version: str
    dimension_names: list[str]
    weights: list[float]
    tiers: list[tuple[str, float]]
    threshold: float | None = None
    train: RelPath
    val: RelPath
    test: RelPath
    version_dir: RelPath
    embed_cache: RelPath | None = None

    def inputs(self) -> list[str]:
        return [self.train, self.val, self.test]

    def outputs(self) -> list[str]:
        return [f"{self.version_dir}/{MODEL_DIR}", f"{self.version_dir}/{HISTORY_FILE}",
                f"{self.version_dir}/{METADATA_FILE}"]

    def run(self, root: Path, on_epoch: EpochHook | None = None) -> FilterTrainResult:
        dims = self.dimension_names
        paths = {k: self.path(k, root) for k in ("train", "val", "test")}
        version_dir = self.path("version_dir", root)
        settings = {"config": self.config.fingerprint(), "dims": dims, "weights": self.weights,
                    "tiers": self.tiers, "threshold": self.threshold, "name": self.filter_name,
                    "version": self.filter_version}
        fingerprint = step_fingerprint(settings, [paths["train"], paths["val"], paths["test"]])
        model_dir = version_dir / MODEL_DIR
        done = finished(model_dir / RESULT_FILE, FilterTrainResult, fingerprint, version_dir / METADATA_FILE)
        if done is not None:
            return done
        cache = EmbeddingCache(self.path("embed_cache", root)) if self.embed_cache else None
        splits = {k: load_split(p, dims) for k, p in paths.items()}
        return train_filter(self.config, splits["train"], splits["val"], splits["test"], dims, version_dir,
                            judge=JudgeSettings(self.weights, self.tiers, self.threshold),
                            filter_name=self.filter_name, filter_version=self.filter_version, cache=cache,
                            fingerprint=fingerprint, model_dir_rel=f"{self.version_dir}/{MODEL_DIR}",
                            on_epoch=on_epoch)


__all__ = ["FilterTrainConfig", "FilterExample", "FilterTrainResult", "TrainFilterSpec", "TestPredictions", "MODES",
           "JudgeSettings", "load_split", "train_filter", "judge_predictions", "training_metadata",
           "example_text", "MODEL_DIR", "HISTORY_FILE", "METADATA_FILE", "SCORER_FILE"]
