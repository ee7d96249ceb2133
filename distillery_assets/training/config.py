"""Training settings: one pydantic model, loaded from ``data/config/training/<role>.yaml``.

Each YAML file names a role and holds several *profiles*:

* ``full``: the seed's QLoRA recipe (meant for a GPU; runs on Modal),
* ``cpu_small``: a tiny run that takes the whole chain to a GGUF on a 2-core CPU in minutes.

The profile comes from the caller, else ``$DISTILLERY_TRAIN_PROFILE``, else ``cpu_small``.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROFILE_ENV = "DISTILLERY_TRAIN_PROFILE"
DEFAULT_PROFILE = "cpu_small"
EMBEDDED_BASE = "embedded"
"""``base_model: embedded`` means the SmolLM2-135M-Instruct checkpoint built by the ``base_model`` asset."""


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
    """4-bit loading of the base for QLoRA. Only used when CUDA is present (see ``lora.pick_device``)."""

    load_in_4bit: bool = False
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class ExportSettings(_Strict):
    intermediate: Literal["f16", "bf16", "f32"] = "f16"
    quant: str = "Q4_K_M"
    merge_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_ppl_degradation: float = Field(default=0.05, ge=0.0)
    ppl_max_examples: int | None = Field(default=None, gt=0)
    ppl_f16: bool = Field(default=False, description="also score the f16 GGUF: separates conversion from quantization error")


class TrainConfig(_Strict):
    role: str
    profile: str
    base_model: str = Field(description="a Hugging Face model id, or 'embedded' for the bundled SmolLM2-135M")
    base_model_note: str = ""
    lora: LoraSettings
    quantization: QuantSettings = QuantSettings()
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
    gradient_checkpointing: bool = False
    max_train_examples: int | None = Field(default=None, gt=0)
    max_val_examples: int | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="stop after this many optimizer steps")
    seed: int = 42
    threads: int | None = Field(default=None, gt=0, description="torch CPU threads (None: torch's default)")
    export: ExportSettings = ExportSettings()

    @property
    def needs_cuda(self) -> bool:
        """QLoRA and paged 8-bit AdamW are GPU recipes; such a profile refuses to run on CPU."""
        return self.quantization.load_in_4bit or self.optimizer == "paged_adamw_8bit"

    def fingerprint(self) -> str:
        """A stable hash of every setting: a finished run with the same fingerprint is reused."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def resolve_profile(profile: str | None = None) -> str:
    return profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


def load_train_config(path: Path, profile: str | None = None) -> TrainConfig:
    """Read ``path`` and build the named profile (explicit arg > env var > ``cpu_small``)."""
    path = Path(path)
    profile = resolve_profile(profile)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TrainingConfigError(f"{path}: training config not found") from exc
    except yaml.YAMLError as exc:
        raise TrainingConfigError(f"{path}: not valid YAML: {exc}") from exc
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
    try:
        return TrainConfig.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"profiles.{profile}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise TrainingConfigError(f"{path}: {problems}") from exc
