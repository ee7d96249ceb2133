"""Training settings: pydantic models, loaded from ``data/config/training/<role>.yaml``.

Two layers, so a model trained from scratch needs no LoRA section:

* ``LoopConfig``  what any training run has (optimizer, schedule, epochs, batch, sequence length, limits,
  checkpoints); used by ``training.loop``.
* ``TrainConfig`` a fine-tune: ``LoopConfig`` plus the base model, the LoRA / 4-bit settings and the export.

Each YAML file names a role and holds several *profiles*:

* ``full``: the seed's QLoRA recipe (meant for a GPU; runs on Modal),
* ``cpu_small``: a tiny run that takes the whole chain to a GGUF on a 2-core CPU in minutes.

The profile comes from the caller, else ``$DISTILLERY_TRAIN_PROFILE``, else ``cpu_small``.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from distillery_assets.io.hashing import json_fingerprint
from distillery_assets.io.yamlfile import read_yaml, validate_yaml

PROFILE_ENV = "DISTILLERY_TRAIN_PROFILE"
DEFAULT_PROFILE = "cpu_small"
EMBEDDED_BASE = "embedded"
"""``base_model: embedded`` means the SmolLM2-135M-Instruct checkpoint built by the ``base_model`` asset."""

NOT_IN_FINGERPRINT = frozenset({"checkpoint_every", "patience"})
"""Settings that change how a run is carried out, not what it produces (``patience`` decides only where a run
stops; every epoch it runs is the same as without it, and a run stopped early can be carried on)."""


class TrainingConfigError(ValueError):
    """A training YAML that cannot be used; the message names the file, profile and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Strict):
    r: int = Field(gt=0)
    alpha: int = Field(gt=0)
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str] = Field(min_length=1)
    bias: Literal["none", "all", "lora_only"] = "none"


class QuantSettings(_Strict):
    """4-bit loading of the base for QLoRA. Only used when CUDA is present (see ``LoopConfig.cuda_required``)."""

    load_in_4bit: bool = False
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


QUANT_TYPES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1", "Q5_K_S",
               "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16")
"""llama.cpp quantization types an export may name (``llama_model_quantize`` ftypes)."""


def _quant_name(value: str) -> str:
    if value not in QUANT_TYPES:
        raise ValueError(f"unknown llama.cpp quantization type {value!r} (known: {', '.join(QUANT_TYPES)})")
    return value


QuantName = Annotated[str, AfterValidator(_quant_name)]


class ExportSettings(_Strict):
    """How the adapter becomes a GGUF, and what the GGUF must pass.

    ``quant`` is the primary quantization (the seed's ``primary_quant``). When its measured perplexity
    degradation against the merged model exceeds ``max_ppl_degradation``, the export tries each of
    ``fallback_quants`` in order and keeps the first one within the bound (or, if none is, the least degraded,
    with the check failing). Perplexity is measured on the whole validation split (``ppl_max_examples`` caps
    it) plus ``heldout_text``, a fixed text file relative to this YAML's folder, cut into windows of
    ``heldout_window`` tokens (default: ``max_seq``).
    """

    intermediate: Literal["f16", "bf16", "f32"] = "f16"
    quant: QuantName = "Q4_K_M"
    fallback_quants: list[QuantName] = Field(
        default_factory=list, description="tried in order when `quant` degrades perplexity beyond the bound")
    merge_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_ppl_degradation: float = Field(default=0.05, ge=0.0)
    ppl_max_examples: int | None = Field(default=None, gt=0)
    ppl_f16: bool = Field(default=False, description="also score the f16 GGUF: separates conversion from quantization error")
    heldout_text: str | None = Field(default=None, description="a text file (relative to the YAML's folder) also scored")
    heldout_window: int | None = Field(default=None, gt=8, description="tokens per held-out window (default max_seq)")
    chat_max_tokens: int | None = Field(default=None, gt=0,
                                        description="token budget of the chat check's reply (default max_seq)")
    chat_repeat_penalty: float = Field(default=1.0, gt=0, description="repeat penalty of the greedy chat check")

    @property
    def candidate_quants(self) -> list[str]:
        """The primary quantization, then each fallback once, in order."""
        return list(dict.fromkeys([self.quant, *self.fallback_quants]))


class LoopConfig(_Strict):
    """Settings every training loop reads (``training.loop``), whatever the model is."""

    role: str
    profile: str
    optimizer: Literal["adamw_torch", "paged_adamw_8bit"] = "adamw_torch"
    learning_rate: float = Field(gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    grad_accum: int = Field(default=1, gt=0)
    max_seq: int = Field(gt=8)
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float | None = Field(default=None, gt=0)
    dtype: Literal["float32", "bfloat16"] = "float32"
    autocast: Literal["bf16", "fp16"] | None = Field(
        default=None, description="mixed precision: the training forward pass under torch.autocast in this dtype "
        "(weights, optimizer and validation stay fp32); fp16 only on CUDA, with a gradient scaler")
    gradient_checkpointing: bool = False
    max_train_examples: int | None = Field(default=None, gt=0)
    max_val_examples: int | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="stop after this many optimizer steps")
    patience: int | None = Field(default=None, gt=0, description=(
        "stop once this many epochs in a row have not lowered the best validation loss (the schedule is still planned for every epoch, so each epoch run is the same as in a run without it; None: run every epoch)"))
    seed: int = 42
    threads: int | None = Field(default=None, gt=0, description="CPU threads of torch and llama.cpp in the step "
                                                               "(None: the thread policy, distillery_assets.threads)")
    checkpoint_every: int | None = Field(
        default=None, gt=0, description="also checkpoint every N optimizer steps (always at each epoch's end)")

    @property
    def needs_cuda(self) -> bool:
        """Paged 8-bit AdamW is a GPU recipe; such a profile refuses to run on CPU."""
        return self.optimizer == "paged_adamw_8bit"

    @property
    def cuda_required(self) -> str | None:
        """Why this profile cannot run without CUDA, for ``device.pick_device``; None when it can."""
        if not self.needs_cuda:
            return None
        return (f"profile {self.profile!r} of {self.role!r} is a GPU recipe (4-bit QLoRA / paged 8-bit AdamW): use "
                "profile cpu_small here or the modal compute backend")

    def fingerprint(self) -> str:
        """A stable hash of every setting that shapes the result: a finished run with the same one is reused."""
        body = self.model_dump(exclude=set(NOT_IN_FINGERPRINT))
        if body.get("autocast") is None:
            body.pop("autocast", None)  # runs from before the setting existed keep their fingerprints
        return json_fingerprint(body)


class TrainConfig(LoopConfig):
    """A LoRA / QLoRA fine-tune of ``base_model`` and its export to GGUF."""

    base_model: str = Field(description="a Hugging Face model id, or 'embedded' for the bundled SmolLM2-135M")
    base_model_note: str = ""
    lora: LoraSettings
    quantization: QuantSettings = QuantSettings()
    export: ExportSettings = ExportSettings()

    @property
    def needs_cuda(self) -> bool:
        """QLoRA and paged 8-bit AdamW are GPU recipes; such a profile refuses to run on CPU."""
        return self.quantization.load_in_4bit or super().needs_cuda

    @property
    def gguf_file_name(self) -> str:
        """The one name of this fine-tune's GGUF file: ``{base}-{role}-{quant}.gguf`` (the primary quant)."""
        return self.gguf_file_name_for(self.export.quant)

    def gguf_file_name_for(self, quant: str) -> str:
        """The GGUF file name when ``quant`` is the one kept (a fallback names its own file)."""
        return gguf_file_name(self.base_model, self.role, quant)


def base_short_name(base_model: str) -> str:
    """``meta-llama/Llama-3.1-8B-Instruct`` -> ``Llama-3.1-8B-Instruct``; ``embedded`` -> SmolLM2 name."""
    from distillery_assets.embedded import SMOLLM2_NAME

    if base_model == EMBEDDED_BASE:
        return SMOLLM2_NAME
    return base_model.rstrip("/").split("/")[-1]


def gguf_file_name(base_model: str, role: str, quant: str) -> str:
    return f"{base_short_name(base_model)}-{role}-{quant}.gguf"


def resolve_profile(profile: str | None = None) -> str:
    return profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


C = TypeVar("C", bound=LoopConfig)


def load_profile(path: Path, model: type[C], profile: str | None = None) -> C:
    """Read ``path`` and build the named profile as ``model`` (explicit arg > env var > ``cpu_small``)."""
    path = Path(path)
    profile = resolve_profile(profile)
    raw = read_yaml(path, error=TrainingConfigError, what="training config")
    if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), dict):
        raise TrainingConfigError(f"{path}: expected a mapping with 'role' and 'profiles'")
    if not isinstance(raw.get("role"), str):
        raise TrainingConfigError(f"{path}: field 'role' missing or not a string")
    profiles = raw["profiles"]
    if profile not in profiles:
        raise TrainingConfigError(
            f"{path}: no profile {profile!r} (has: {', '.join(sorted(profiles))}); set ${PROFILE_ENV}"
        )
    body = dict(profiles[profile] or {})
    body.setdefault("role", raw["role"])
    body["profile"] = profile
    return validate_yaml(body, model, path=path, prefix=f"profiles.{profile}", error=TrainingConfigError)


def load_train_config(path: Path, profile: str | None = None) -> TrainConfig:
    """The fine-tune settings of one profile of ``path``."""
    return load_profile(path, TrainConfig, profile)
