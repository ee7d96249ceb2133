"""Train a filter's scorer: a regressor from document text to one score per dimension.

The default recipe (``mode: auto``) trains several candidate heads on the same splits and keeps the one with
the lowest validation MAE; every candidate is reported with its validation and test MAE, so the table says
how much each one gained over the mean predictor and over ridge:

* ``ridge``: ridge regression on the frozen all-MiniLM-L6-v2 sentence vectors, in closed form, its penalty
  chosen on validation (:class:`~distillery_assets.filters.baselines.RidgeBaseline`). This is also the
  baseline every table carries: a linear head trained by gradient descent on the same vectors can at best
  equal it, so ``frozen_head`` is not a default candidate.
* ``mlp``: a small MLP (one hidden layer, GELU, dropout) on the same frozen vectors, standardised; it starts
  at the mean predictor and stops early on validation MAE.
* ``full_finetune``: the encoder and a linear head, every weight trained on tokenized text, early stopping on
  validation. Default only where a GPU is present (an epoch of ~500 documents costs minutes on 2 CPU cores);
  list it in ``candidates`` to run it anywhere.
* ``lora``: the seed's GPU recipe. ``AutoModelForSequenceClassification(num_labels=<dims>,
  problem_type="regression")`` on ``lora_base_model`` (Qwen2.5 0.5B/1.5B in the seed) with LoRA r16/alpha
  32/dropout .05 on every projection, max length 512, AdamW 2e-5; only when listed in ``candidates``.
* ``frozen_head``: FineWeb-Edu's recipe (frozen encoder, a linear head by AdamW), when listed.

A single mode (``mode: full_finetune`` etc.) trains that one candidate (ridge is still fitted, as the
baseline). Recommended learning rates, measured on the shipped labels sample (data/filters/passage_signal):
:data:`RECOMMENDED_LR`; ``learning_rates`` / ``max_epochs`` override them per candidate, ``learning_rate`` /
``epochs`` for a single mode.

Every gradient candidate runs one loop (the shared seeding, device, AdamW and schedule of
``training.loop``): per epoch, the training split's metrics come from the training pass itself (the
predictions of each batch as it was trained, dropout on), so an epoch encodes the training split once;
validation is predicted in eval mode; the best epoch by validation MAE is kept, and training stops after
``patience`` epochs without improvement. ``include_title`` decides whether the model reads ``title\\n\\n
content`` or the content alone: unset, titles that look like file names are left out, and otherwise ridge
on both inputs decides on validation.

The winner is saved to ``model/`` as a scorer :class:`~distillery_assets.filters.score.Scorer` loads (ridge
and the MLP too: the encoder's files and ``head.safetensors``). ``training_history.json`` is the winner's
epochs (empty for ridge), ``training_metadata.json`` the seed's fields plus the candidate table.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
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
"""Inside ``model/``: how to load the scorer (mode, dims, max length, pooling, include_title)."""
HEAD_FILE = "head.safetensors"
RESULT_FILE = "train_result.json"
"""Inside ``model/``: the step's result, reused when the fingerprint matches."""
SCORER_FORMAT = "distillery-filter-scorer/1"
QWEN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

CandidateName = Literal["ridge", "mlp", "frozen_head", "full_finetune", "lora"]
CANDIDATES: tuple[str, ...] = ("ridge", "mlp", "frozen_head", "full_finetune", "lora")
"""Every candidate head, simplest first (a tie on validation MAE keeps the simpler)."""
RECOMMENDED_LR = {"mlp": 1e-3, "frozen_head": 3e-3, "full_finetune": 5e-5, "lora": 2e-5}
"""AdamW learning rate per gradient candidate (constant schedule unless configured): the MLP and the linear
head on standardised frozen vectors move slowly at 3e-4 (the linear head was still improving at epoch 20);
a whole MiniLM fine-tunes well at 5e-5 and diverges by 1e-3; LoRA is the seed's 2e-5."""
MAX_EPOCHS = {"mlp": 200, "frozen_head": 100, "full_finetune": 8, "lora": 3}
PATIENCE = {"mlp": 15, "frozen_head": 10, "full_finetune": 2, "lora": 2}
"""Epochs without a better validation MAE before a candidate stops."""
GPU_ONLY = ("full_finetune",)
"""Default candidates only where a GPU is present (too slow for the default on CPU)."""


# ------------------------------------------------------------------------------------------------ config

class FilterTrainConfig(BaseModel):
    """How a scorer is trained. Default: ``mode: auto`` (ridge, MLP, full fine-tune on GPU; best by
    validation MAE)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["auto", "frozen_head", "full_finetune", "lora"] = "auto"
    candidates: list[CandidateName] | None = None
    """``mode: auto``: the heads to compare (None: ridge and mlp, plus full_finetune where a GPU is present)."""
    base_model: str = EMBEDDED_ENCODER
    lora_base_model: str | None = None
    """The LoRA candidate's base (None: ``base_model``)."""
    max_length: int = Field(default=256, ge=8, le=8192)
    epochs: int | None = Field(default=None, ge=1)
    """Single mode: the most epochs (None: :data:`MAX_EPOCHS`); ``mode: auto`` uses ``max_epochs``."""
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float | None = Field(default=None, gt=0)
    """Single mode: AdamW's rate (None: :data:`RECOMMENDED_LR`); ``mode: auto`` uses ``learning_rates``."""
    learning_rates: dict[str, float] = Field(default_factory=dict)
    max_epochs: dict[str, int] = Field(default_factory=dict)
    patience: int | None = Field(default=None, ge=1)
    """Epochs without a better validation MAE before stopping (None: :data:`PATIENCE` per candidate)."""
    include_title: bool | None = None
    """Read ``title\\n\\ncontent`` (True) or the content alone (False); None: off when titles look like file
    names, else what ridge prefers on validation."""
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    lr_scheduler: str = "constant"
    """Constant for the heads (label sets are thousands of rows, not FineWeb-Edu's 450k: a decaying rate
    stops the head before it fits); the LoRA recipe uses the seed's linear warmup schedule."""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    seed: int = 42
    head_dropout: float = Field(default=0.0, ge=0, lt=1)
    mlp_hidden: int = Field(default=256, ge=1)
    mlp_dropout: float = Field(default=0.1, ge=0, lt=1)
    mlp_weight_decay: float = Field(default=0.01, ge=0)
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
        if self.mode == "auto":
            single = [k for k in ("epochs", "learning_rate") if getattr(self, k) is not None]
            if single:
                raise ValueError(f"{single} set one mode's recipe; mode 'auto' compares candidates: set "
                                 "learning_rates / max_epochs by candidate name (e.g. {full_finetune: 5.0e-5}), "
                                 "or choose one mode")
        elif self.candidates is not None:
            raise ValueError(f"candidates are compared in mode 'auto' only (mode is {self.mode!r})")
        if self.candidates is not None:
            if not self.candidates:
                raise ValueError("candidates: name at least one of " + ", ".join(CANDIDATES))
            if len(set(self.candidates)) != len(self.candidates):
                raise ValueError(f"candidates: {self.candidates} repeats a name")
        for key, table in (("learning_rates", self.learning_rates), ("max_epochs", self.max_epochs)):
            unknown = sorted(set(table) - set(RECOMMENDED_LR))
            if unknown:
                raise ValueError(f"{key}: {unknown} are not gradient candidates ({', '.join(RECOMMENDED_LR)})")
            if any(v <= 0 for v in table.values()):
                raise ValueError(f"{key}: every value must be positive")
        return self

    @property
    def clip(self) -> tuple[float, float] | None:
        return None if self.score_min is None else (float(self.score_min), float(self.score_max))

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"threads", "device"})

    def planned(self, device: str) -> tuple[list[str], dict[str, str]]:
        """(the candidates to train, in order; the default ones left out here, with why)."""
        if self.mode != "auto":
            return [self.mode], {}
        if self.candidates is not None:
            return [c for c in CANDIDATES if c in self.candidates], {}
        names, skipped = ["ridge", "mlp"], {}
        for name in GPU_ONLY:
            if device == "cpu":
                skipped[name] = ("not a default on CPU (an epoch of ~500 documents takes minutes on 2 cores); "
                                 "list it in training.candidates to run it")
            else:
                names.append(name)
        skipped["lora"] = "only when listed in training.candidates (needs lora_base_model, a GPU recipe)"
        return names, skipped

    def lr_for(self, name: str) -> float:
        if self.mode == name and self.learning_rate is not None:
            return self.learning_rate
        return float(self.learning_rates.get(name, RECOMMENDED_LR[name]))

    def epochs_for(self, name: str) -> int:
        if self.mode == name and self.epochs is not None:
            return self.epochs
        return int(self.max_epochs.get(name, MAX_EPOCHS[name]))

    def patience_for(self, name: str) -> int:
        return self.patience or PATIENCE[name]


# -------------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class FilterExample:
    id: str
    title: str
    content: str
    labels: tuple[float, ...]

    @property
    def text(self) -> str:
        """``title\\n\\ncontent`` (the seed's input)."""
        return document_text({"title": self.title, "content": self.content}, MODEL_SEP)

    def text_for(self, include_title: bool) -> str:
        return self.text if include_title else self.content


def example_text(record: dict[str, Any], include_title: bool = True) -> str:
    """The model's input: the document's text with ``MODEL_SEP`` (``title\\n\\ncontent``, the seed's), or the
    content alone."""
    return document_text(record, MODEL_SEP) if include_title else str(record.get("content") or "")


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
        content = str(record.get("content") or "")
        if not content.strip():
            raise JsonlError(path, line, "field 'content' is empty")
        out.append(FilterExample(str(record.get("id", f"{path.name}:{line}")), str(record.get("title") or ""),
                                 content, labels))
    if not out:
        raise ValueError(f"{path}: the split holds no examples")
    return out


def targets(examples: Sequence[FilterExample]) -> np.ndarray:
    return np.asarray([e.labels for e in examples], dtype=np.float32)


FILE_NAME = re.compile(r"^[^\s]+\.[A-Za-z0-9]{1,5}$|^[^\s]*[_/\\][^\s]*$|^[A-Za-z]*\d+[A-Za-z0-9-]*$")


def titles_look_like_file_names(titles: Sequence[str]) -> bool:
    """True when most non-empty titles are one token shaped like a file name (``pg624.txt``,
    ``chunk_0012``, ``books/a``, ``doc42``): words a scorer should not learn from."""
    given = [t.strip() for t in titles if t and t.strip()]
    return bool(given) and sum(bool(FILE_NAME.match(t)) for t in given) > len(given) / 2


# ------------------------------------------------------------------------------------------------ models

class MeanPoolRegressor:
    """Encoder (AutoModel) + mean pooling + dropout + a head on standardised features: a Linear layer (the
    MiniLM scorer), or with ``hidden`` an MLP (Linear, GELU, dropout, Linear). A torch module is built lazily
    (torch is imported only when training or scoring)."""

    @staticmethod
    def build(encoder_model: Any, n_dims: int, dropout: float, normalize: bool = True, *,
              hidden: int | None = None, hidden_dropout: float = 0.0) -> Any:
        import torch

        from distillery_assets.filters.embed import mean_pool

        class _Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = encoder_model
                self.dropout = torch.nn.Dropout(dropout)
                size = int(encoder_model.config.hidden_size)
                self.head = (torch.nn.Linear(size, n_dims) if hidden is None else torch.nn.Sequential(
                    torch.nn.Linear(size, hidden), torch.nn.GELU(), torch.nn.Dropout(hidden_dropout),
                    torch.nn.Linear(hidden, n_dims)))
                self.normalize = normalize
                # features are standardised before the head (mean/std of the training embeddings): a unit
                # sentence vector has components ~0.05, too small for a head to move in a few hundred steps
                self.register_buffer("feature_mean", torch.zeros(size))
                self.register_buffer("feature_std", torch.ones(size))

            @property
            def output(self) -> Any:
                """The head's last Linear layer."""
                return self.head if hidden is None else self.head[-1]

            def embed(self, input_ids, attention_mask, **extra):
                hidden_states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                             **extra).last_hidden_state
                return mean_pool(hidden_states, attention_mask, self.normalize)

            def forward(self, input_ids=None, attention_mask=None, embeddings=None, **extra):
                if embeddings is None:
                    embeddings = self.embed(input_ids, attention_mask, **extra)
                return self.head(self.dropout((embeddings - self.feature_mean) / self.feature_std))

            def head_tensors(self) -> dict[str, Any]:
                """What ``head.safetensors`` holds (the scorer's head, see ``score.Scorer.forward``)."""
                if hidden is None:
                    out = {"weight": self.head.weight, "bias": self.head.bias}
                else:
                    out = {"w1": self.head[0].weight, "b1": self.head[0].bias, "w2": self.head[3].weight,
                           "b2": self.head[3].bias}
                return {**out, "feature_mean": self.feature_mean, "feature_std": self.feature_std}

        return _Module()


def _count(params: Any) -> int:
    return int(sum(p.numel() for p in params))


# ------------------------------------------------------------------------------------------------- modes

class ScorerMode:
    """One gradient candidate: how it builds the scorer on ``device``, turns example indices into model
    inputs, reads predictions off the model and saves ``model/``. One instance per run holds that run's model."""

    name: ClassVar[str]

    def __init__(self, cfg: FilterTrainConfig, device: str):
        self.cfg, self.device = cfg, device
        self.base = self.resolve_base()
        self.model: Any = None
        self.tokenizer: Any = None
        self.texts: dict[str, list[str]] = {}
        self.embeddings: dict[str, np.ndarray] | None = None

    def resolve_base(self) -> Path | str:
        return resolve_encoder(self.cfg.base_model)

    def build(self, texts: dict[str, list[str]], y_train: np.ndarray, n_dims: int, cache: EmbeddingCache | None,
              features: Features | None = None) -> None:
        """Build ``self.model`` (on the device) and ``self.tokenizer`` for these split texts; ``features``:
        the frozen vectors already computed for these texts (reused when they come from this encoder)."""
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

    def save(self, folder: Path) -> None:
        """The model's files in ``folder`` (``model/`` being written)."""
        raise NotImplementedError


@dataclass
class Features:
    """The frozen encoder's sentence vectors of each split (ridge's and the frozen heads' input)."""

    encoder: Encoder
    vectors: dict[str, np.ndarray]


def _copy_encoder(base: Path | str, folder: Path, model: Any = None, tokenizer: Any = None) -> None:
    """The untouched encoder's files into ``folder`` (a Hub id: saved from the loaded model)."""
    path = Path(str(base))
    if not path.is_dir():
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        return
    for item in path.iterdir():
        if item.name in ("README.md",):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)


class _MiniLMMode(ScorerMode):
    """The encoder + mean pooling + a head (:class:`MeanPoolRegressor`), features standardised by the
    training embeddings and the head started at the training mean: epoch 1 begins at the mean predictor."""

    hidden: ClassVar[bool] = False

    def build(self, texts, y_train, n_dims, cache, features=None) -> None:
        import torch

        cfg, self.texts = self.cfg, texts
        if features is not None and str(features.encoder.source) == str(self.base) \
                and features.encoder.max_length == cfg.max_length:
            encoder, self.embeddings = features.encoder, features.vectors
        else:
            encoder = Encoder(self.base, max_length=cfg.max_length, device=self.device)
            self.embeddings = {k: embed_texts(v, encoder, cache, batch_size=64) for k, v in texts.items()}
        self.tokenizer = encoder.tokenizer
        model = encoder.model if self.name != "full_finetune" else _fresh(encoder)
        module = MeanPoolRegressor.build(model, n_dims, cfg.mlp_dropout if self.hidden else cfg.head_dropout,
                                         encoder.normalize, hidden=cfg.mlp_hidden if self.hidden else None,
                                         hidden_dropout=cfg.mlp_dropout)
        with torch.no_grad():
            module.feature_mean.copy_(torch.as_tensor(self.embeddings["train"].mean(0)))
            module.feature_std.copy_(torch.as_tensor(self.embeddings["train"].std(0) + 1e-6))
        self.prepare_encoder(module)
        self.model = module.to(self.device)
        with torch.no_grad():
            out = self.model.output
            out.bias.copy_(torch.as_tensor(y_train.mean(0)))
            if self.hidden:
                out.weight.zero_()
            else:
                out.weight.mul_(0.1)

    def prepare_encoder(self, module: Any) -> None:
        """What the mode does to the encoder before training (freeze it, or checkpoint its gradients)."""

    def save_encoder(self, folder: Path) -> None:
        self.model.encoder.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))

    def save(self, folder: Path) -> None:
        """The encoder's files (config.json, model.safetensors, tokenizer) + ``head.safetensors``."""
        from safetensors.torch import save_file

        self.save_encoder(folder)
        save_file({name: t.detach().cpu().contiguous() for name, t in self.model.head_tensors().items()},
                  str(folder / HEAD_FILE))


def _fresh(encoder: Encoder) -> Any:
    """A trainable copy of the encoder's transformer (the shared frozen one stays as it is)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(encoder.source)).to(encoder.device)


class FrozenHead(_MiniLMMode):
    """The encoder frozen; documents embedded once (cached) and only the linear head trained on the vectors."""

    name = "frozen_head"

    def build(self, texts, y_train, n_dims, cache, features=None) -> None:
        import torch

        super().build(texts, y_train, n_dims, cache, features)
        self.vectors = {k: torch.as_tensor(v, device=self.device) for k, v in self.embeddings.items()}

    def prepare_encoder(self, module: Any) -> None:
        for p in module.encoder.parameters():
            p.requires_grad_(False)

    def forward(self, split: str, idx: Sequence[int]) -> Any:
        return self.model(embeddings=self.vectors[split][list(idx)])

    def save_encoder(self, folder: Path) -> None:
        _copy_encoder(self.base, folder, self.model.encoder, self.tokenizer)


class MlpHead(FrozenHead):
    """The encoder frozen; an MLP (one hidden layer) on the standardised vectors, started at the mean predictor."""

    name = "mlp"
    hidden = True


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
        base = self.cfg.lora_base_model or self.cfg.base_model
        return resolve_encoder(base) if base == EMBEDDED_ENCODER else base

    def build(self, texts, y_train, n_dims, cache, features=None) -> None:
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


MODES: dict[str, type[ScorerMode]] = {m.name: m for m in (FrozenHead, MlpHead, FullFinetune, LoraRegressor)}
"""Every gradient candidate by name (``ridge`` is closed form, :func:`_ridge_candidate`)."""


# ------------------------------------------------------------------------------------------------ result

class TestPredictions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str]
    target: list[list[float]]
    predictions: dict[str, list[list[float]]]
    """By model name: ``model`` (the kept scorer), ``mean``, ``ridge``."""


class CandidateResult(BaseModel):
    """One candidate head of a run: how it did on validation (what chose the winner) and on test."""

    model_config = ConfigDict(extra="forbid")
    name: str
    status: Literal["trained", "skipped"]
    kept: bool = False
    note: str = ""
    val_mae: float | None = None
    test_mae: float | None = None
    learning_rate: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    max_epochs: int | None = None
    seconds: float | None = None
    seconds_per_epoch: float | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)


class FilterTrainResult(StepResult):
    kind: Literal["train_filter"] = "train_filter"
    fingerprint: str
    filter_name: str
    filter_version: str
    recipe: str = "auto"
    """``auto`` (candidates compared) or the single mode configured."""
    mode: str
    """The kept candidate: ridge, mlp, frozen_head, full_finetune or lora."""
    base_model: str
    device: str
    dimension_names: list[str]
    best_epoch: int
    """The kept candidate's best epoch (0 for ridge: closed form)."""
    best_val_mae: float
    epochs_run: int
    train_examples: int
    val_examples: int
    test_examples: int
    num_parameters: int
    num_trainable_parameters: int
    history: list[dict[str, Any]]
    """The kept candidate's epochs (empty for ridge)."""
    candidates: list[CandidateResult] = Field(default_factory=list)
    include_title: bool = True
    include_title_reason: str = ""
    test: dict[str, dict[str, Any]]
    """Results table on the test split, by model name (``model``, ``mean``, ``ridge``): regression metrics,
    overall MAE, tier accuracy and the binary decision (weighted overall; :func:`judge_predictions`
    re-judges with the filter's own rules)."""
    ridge_alpha: float | None
    mean_val_mae: float | None = None
    """The mean predictor's validation MAE (the level every candidate's curve is read against)."""
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


@dataclass
class _Trained:
    """A trained candidate in memory: its predictions at the best epoch and how to save it."""

    result: CandidateResult
    val: np.ndarray
    test: np.ndarray
    save: Callable[[Path], dict[str, Any]]
    """Writes the model's files into a folder; returns the scorer metadata it adds (mode, head kind)."""
    parameters: tuple[int, int] = (0, 0)


def fit_gradient(mode: ScorerMode, name: str, cfg: FilterTrainConfig, y: dict[str, np.ndarray], dims: Sequence[str],
                 on_epoch: EpochHook | None = None) -> tuple[list[dict[str, Any]], int, float, dict[str, Any], float]:
    """The regression loop of every gradient candidate: AdamW at the candidate's rate, MSE, gradient clipping;
    per epoch the training split's metrics from the training pass itself (each batch's predictions as it was
    trained), validation predicted in eval mode; the best epoch by validation MAE kept (its trainable weights
    restored), stopping after ``patience`` epochs without improvement. Returns (history, best epoch, best
    validation MAE, best trainable state, training seconds)."""
    import torch

    model, device = mode.model, mode.device
    n_train = len(y["train"])
    y_train = torch.as_tensor(y["train"], device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = cfg.mlp_weight_decay if name == "mlp" else cfg.weight_decay
    optimizer = make_optimizer(trainable, learning_rate=cfg.lr_for(name), weight_decay=decay)
    epochs, patience = cfg.epochs_for(name), cfg.patience_for(name)
    total = math.ceil(n_train / cfg.batch_size) * epochs
    scheduler = make_scheduler(optimizer, cfg.lr_scheduler, total, warmup_ratio=cfg.warmup_ratio,
                               warmup_steps=cfg.warmup_steps)
    eval_batch = max(cfg.batch_size, 64)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    rng = random.Random(cfg.seed)
    spare = None
    if str(device) == "cpu":  # torch's threads: the share, plus a core nobody else is using (re-checked)
        from distillery_assets.threads import apply_torch_threads, spare_cores

        spare = spare_cores(cfg.threads)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = list(range(n_train))
        rng.shuffle(order)
        seen = np.zeros(n_train, dtype=bool)
        preds = np.zeros_like(y["train"])
        for start in range(0, n_train, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if spare is not None and spare.check()[1]:
                apply_torch_threads(spare.threads)
            out = mode.forward("train", idx).float()
            loss = torch.nn.functional.mse_loss(out, y_train[idx])
            if not torch.isfinite(loss):  # the seed skips NaN-loss batches; so do we, and say so
                log.warning("%s epoch %d: skipped a batch with a non-finite loss", name, epoch)
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                continue
            preds[idx] = out.detach().cpu().numpy()
            seen[idx] = True
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        train_seconds = time.perf_counter() - epoch_start
        if not seen.any():
            raise RuntimeError(f"{name} epoch {epoch}: every batch had a non-finite loss (learning rate "
                               f"{cfg.lr_for(name):g} too high?)")
        record: dict[str, Any] = {"epoch": epoch,
                                  "train": M.regression_metrics(preds[seen], y["train"][seen], dims)}
        record["val"] = M.regression_metrics(mode.predict("val", eval_batch), y["val"], dims)
        record["train_pass_seconds"] = round(train_seconds, 3)
        record["seconds"] = round(time.perf_counter() - epoch_start, 3)
        history.append(record)
        log.info("%s epoch %d: train MAE %.4f (training pass) val MAE %.4f", name, epoch, record["train"]["mae"],
                 record["val"]["mae"])
        if on_epoch is not None:
            on_epoch({"candidate": name, **record})
        if best is None or record["val"]["mae"] < best[0]:
            best = (record["val"]["mae"], epoch, _trainable_state(model))
        elif epoch - best[1] >= patience:
            log.info("%s: no better validation MAE for %d epochs; stopped at epoch %d (best %d)", name, patience,
                     epoch, best[1])
            break
    assert best is not None
    _load_trainable_state(model, best[2])
    return history, best[1], best[0], best[2], time.perf_counter() - started


def _mae(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64))))


def _ridge_candidate(ridge: RidgeBaseline, features: Features, y: dict[str, np.ndarray], seconds: float,
                     base: Path | str) -> _Trained:
    """Ridge as a candidate: saved as the encoder's files + a linear head on the raw sentence vectors."""

    def save(folder: Path) -> dict[str, Any]:
        import torch
        from safetensors.torch import save_file

        _copy_encoder(base, folder, features.encoder.model, features.encoder.tokenizer)
        coef = np.ascontiguousarray(np.atleast_2d(np.asarray(ridge.model.coef_, dtype=np.float32)))
        bias = np.ascontiguousarray(np.atleast_1d(np.asarray(ridge.model.intercept_, dtype=np.float32)))
        size = coef.shape[1]
        save_file({"weight": torch.as_tensor(coef), "bias": torch.as_tensor(bias),
                   "feature_mean": torch.zeros(size), "feature_std": torch.ones(size)}, str(folder / HEAD_FILE))
        return {"mode": "ridge", "head_kind": "linear"}

    val, test = ridge.predict(features.vectors["val"]), ridge.predict(features.vectors["test"])
    n = int(np.asarray(ridge.model.coef_).size + np.asarray(ridge.model.intercept_).size)
    result = CandidateResult(name="ridge", status="trained", val_mae=_mae(val, y["val"]), test_mae=_mae(test, y["test"]),
                             best_epoch=0, epochs_run=0, seconds=round(seconds, 3),
                             note=f"closed form, alpha {ridge.alpha:g} chosen on validation")
    return _Trained(result, val, test, save, (n, n))


def _gradient_candidate(name: str, cfg: FilterTrainConfig, device: str, texts: dict[str, list[str]],
                        y: dict[str, np.ndarray], dims: Sequence[str], cache: EmbeddingCache | None,
                        features: Features, on_epoch: EpochHook | None) -> _Trained:
    seed_torch(cfg.seed, cfg.threads)
    mode = MODES[name](cfg, device)
    mode.build(texts, y["train"], len(dims), cache, features)
    history, best_epoch, best_val, _, seconds = fit_gradient(mode, name, cfg, y, dims, on_epoch)
    eval_batch = max(cfg.batch_size, 64)
    val, test = mode.predict("val", eval_batch), mode.predict("test", eval_batch)
    trainable = [p for p in mode.model.parameters() if p.requires_grad]
    per_epoch = [h["seconds"] for h in history]
    result = CandidateResult(
        name=name, status="trained", val_mae=_mae(val, y["val"]), test_mae=_mae(test, y["test"]),
        learning_rate=cfg.lr_for(name), best_epoch=best_epoch, epochs_run=len(history),
        max_epochs=cfg.epochs_for(name), seconds=round(seconds, 3),
        seconds_per_epoch=round(float(np.mean(per_epoch)), 3) if per_epoch else None, history=history,
        note=(f"stopped early (patience {cfg.patience_for(name)})" if len(history) < cfg.epochs_for(name) else
              "ran every epoch"))

    def save(folder: Path) -> dict[str, Any]:
        mode.save(folder)
        return {"mode": name, "head_kind": "mlp" if name == "mlp" else "linear"}

    return _Trained(result, val, test, save, (_count(mode.model.parameters()), _count(trainable)))


def frozen_features(cfg: FilterTrainConfig, device: str, texts: dict[str, list[str]],
                    cache: EmbeddingCache | None) -> Features:
    """The frozen encoder's vectors of each split: ``base_model`` when it is an encoder (the embedded MiniLM by
    default), the embedded MiniLM when only LoRA runs on a causal LM."""
    base = cfg.base_model if cfg.mode != "lora" else EMBEDDED_ENCODER
    encoder = Encoder(resolve_encoder(base), max_length=min(cfg.max_length, 512), device=device)
    return Features(encoder, {k: embed_texts(v, encoder, cache, batch_size=64) for k, v in texts.items()})


def choose_include_title(cfg: FilterTrainConfig, splits: dict[str, list[FilterExample]], device: str,
                         cache: EmbeddingCache | None, y: dict[str, np.ndarray]) -> tuple[bool, str, Features | None]:
    """Whether the model reads titles, and why: as configured; off when no document has a title or most
    titles look like file names; else the input on which ridge has the lower validation MAE (its features
    come back, so they are computed once)."""
    if cfg.include_title is not None:
        return cfg.include_title, "configured", None
    titles = [e.title for e in splits["train"]]
    if not any(t.strip() for t in titles):
        return False, "no document has a title", None
    if titles_look_like_file_names(titles):
        sample = next(t for t in titles if t.strip())
        return False, f"titles look like file names (e.g. {sample!r}): left out", None
    maes, feats = {}, {}
    for include in (False, True):
        texts = {k: [e.text_for(include) for e in v] for k, v in splits.items()}
        feats[include] = frozen_features(cfg, device, texts, cache)
        fit = RidgeBaseline.fit(feats[include].vectors["train"], y["train"], feats[include].vectors["val"], y["val"],
                                clip=cfg.clip)
        maes[include] = _mae(fit.predict(feats[include].vectors["val"]), y["val"])
    include = maes[True] < maes[False]
    return include, (f"ridge validation MAE {maes[True]:.3f} with titles, {maes[False]:.3f} without: "
                     f"{'kept' if include else 'left out'}"), feats[include]


def train_filter(cfg: FilterTrainConfig, train: Sequence[FilterExample], val: Sequence[FilterExample],
                 test: Sequence[FilterExample], dims: Sequence[str], version_dir: Path, *, judge: JudgeSettings,
                 filter_name: str, filter_version: str, cache: EmbeddingCache | None = None,
                 fingerprint: str = "", model_dir_rel: str = MODEL_DIR, on_epoch: EpochHook | None = None,
                 ) -> FilterTrainResult:
    """Train the candidates, keep the best by validation MAE in ``version_dir/model``, score the test split
    with the baselines, and write the seed's ``training_history.json`` / ``training_metadata.json``."""
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
    device = pick_device(cfg.device)
    splits = {"train": list(train), "val": list(val), "test": list(test)}
    y = {k: targets(v) for k, v in splits.items()}
    include_title, title_reason, features = choose_include_title(cfg, splits, device, cache, y)
    texts = {k: [e.text_for(include_title) for e in v] for k, v in splits.items()}
    started = time.perf_counter()
    if features is None:
        features = frozen_features(cfg, device, texts, cache)
    embed_seconds = time.perf_counter() - started

    planned, skipped = cfg.planned(device)
    start = time.perf_counter()
    ridge = RidgeBaseline.fit(features.vectors["train"], y["train"], features.vectors["val"], y["val"], clip=cfg.clip)
    ridge_run = _ridge_candidate(ridge, features, y, time.perf_counter() - start + embed_seconds, features.encoder.source)
    trained: list[_Trained] = []
    for name in planned:
        if name == "ridge":
            trained.append(ridge_run)
        else:
            log.info("training candidate %s (lr %g, at most %d epochs)", name, cfg.lr_for(name), cfg.epochs_for(name))
            trained.append(_gradient_candidate(name, cfg, device, texts, y, dims, cache, features, on_epoch))
    winner = min(trained, key=lambda t: (t.result.val_mae, CANDIDATES.index(t.result.name)))
    winner.result.kept = True
    rows = [t.result for t in trained]
    if "ridge" not in planned:
        rows.append(ridge_run.result.model_copy(update={"note": ridge_run.result.note + "; the baseline, not a "
                                                        "candidate in this mode"}))
    rows += [CandidateResult(name=n, status="skipped", note=why) for n, why in skipped.items()]
    train_seconds = time.perf_counter() - started

    # ---- test: the kept scorer and the baselines on the same rows
    mean = MeanPredictor.fit(y["train"])
    predictions = {"model": winner.test, "mean": mean.predict(len(test)), "ridge": ridge_run.test}
    overall = M.weighted_overall(judge.weights)
    table = {name: M.judge(p, y["test"], dims, overall=overall, tiers=judge.tiers, threshold=judge.threshold)
             for name, p in predictions.items()}

    # ---- write model/, history, metadata (each atomically; model/ as one folder)
    version_dir = Path(version_dir)
    w = winner.result
    base = (cfg.lora_base_model or cfg.base_model) if w.name == "lora" else cfg.base_model
    result = FilterTrainResult(
        fingerprint=fingerprint, filter_name=filter_name, filter_version=str(filter_version), recipe=cfg.mode,
        mode=w.name, base_model=base, device=device, dimension_names=dims, best_epoch=w.best_epoch or 0,
        best_val_mae=float(w.val_mae), epochs_run=w.epochs_run or 0, train_examples=len(train),
        val_examples=len(val), test_examples=len(test), num_parameters=winner.parameters[0],
        num_trainable_parameters=winner.parameters[1], history=w.history, candidates=rows,
        include_title=include_title, include_title_reason=title_reason, test=table, ridge_alpha=ridge.alpha,
        mean_val_mae=_mae(mean.predict(len(val)), y["val"]),
        test_predictions=TestPredictions(ids=[e.id for e in test], target=y["test"].tolist(),
                                         predictions={k: np.asarray(v).tolist() for k, v in predictions.items()}),
        embed_cache=cache.stats.as_dict() if cache is not None else None,
        train_seconds=round(train_seconds, 3), wall_seconds=round(time.perf_counter() - wall, 3),
        model_dir=model_dir_rel,
    )
    max_length = min(cfg.max_length, 512) if w.name == "ridge" else cfg.max_length
    with atomic_path(version_dir / MODEL_DIR, is_dir=True) as tmp:
        extra = winner.save(tmp)
        scorer_meta = {"format": SCORER_FORMAT, **extra, "base_model": base, "dimension_names": dims,
                       "max_length": max_length,
                       "pooling": "mean", "normalize": True, "include_title": include_title,
                       "clip": list(cfg.clip) if cfg.clip else None, "head": HEAD_FILE,
                       "filter_name": filter_name, "filter_version": str(filter_version), "fingerprint": fingerprint}
        atomic_write_text(tmp / SCORER_FILE, json.dumps(scorer_meta, indent=2))
        atomic_write_text(tmp / RESULT_FILE, result.record_json())
    atomic_write_text(version_dir / HISTORY_FILE, json.dumps(w.history, indent=2))
    atomic_write_text(version_dir / METADATA_FILE, json.dumps(training_metadata(cfg, result), indent=2))
    return result


def training_metadata(cfg: FilterTrainConfig, result: FilterTrainResult) -> dict[str, Any]:
    """The seed's ``training_metadata.json`` fields (of the kept candidate), then what this platform adds."""
    kept = next((c for c in result.candidates if c.kept), None)
    return {
        "filter_name": result.filter_name, "filter_version": result.filter_version,
        "dimension_names": result.dimension_names, "num_dimensions": len(result.dimension_names),
        "model_name": result.base_model, "num_parameters": result.num_parameters,
        "num_trainable_parameters": result.num_trainable_parameters,
        "epochs": kept.max_epochs if kept and kept.max_epochs else result.epochs_run,
        "batch_size": cfg.batch_size, "learning_rate": kept.learning_rate if kept else None,
        "max_length": cfg.max_length, "warmup_steps": cfg.warmup_steps, "train_examples": result.train_examples,
        "val_examples": result.val_examples, "best_val_mae": result.best_val_mae,
        # platform additions
        "training_mode": result.mode, "recipe": result.recipe, "test_examples": result.test_examples,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "device": result.device,
        "fingerprint": result.fingerprint, "config": cfg.fingerprint(),
        "include_title": result.include_title, "include_title_reason": result.include_title_reason,
        "candidates": [c.model_dump(exclude={"history"}) for c in result.candidates],
        "test_mae": result.test["model"]["mae"], "test_rmse": result.test["model"]["rmse"],
        "baseline_test_mae": {k: v["mae"] for k, v in result.test.items() if k != "model"},
        "ridge_alpha": result.ridge_alpha, "mean_val_mae": result.mean_val_mae,
        "train_seconds": result.train_seconds,
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


__all__ = ["FilterTrainConfig", "FilterExample", "FilterTrainResult", "CandidateResult", "TrainFilterSpec",
           "TestPredictions", "MODES", "CANDIDATES", "RECOMMENDED_LR", "titles_look_like_file_names",
           "JudgeSettings", "load_split", "train_filter", "judge_predictions", "training_metadata",
           "example_text", "MODEL_DIR", "HISTORY_FILE", "METADATA_FILE", "SCORER_FILE"]
