"""The GPU steps as typed specs, run the same way in process and on Modal.

A step is a pydantic spec with a ``kind`` field; ``spec.run(root) -> StepResult`` does the work. Every
path in a spec is relative to ``root`` (``data_dir()`` locally, ``/vol`` on Modal) and is refused at
construction if it is absolute or climbs out with ``..``. A spec also names the files it reads
(``inputs()``) and writes (``outputs()``), so the compute resource knows what to upload and download.

    TrainLoraSpec(config=cfg, train="poetry/poet/train.jsonl", val="poetry/poet/val.jsonl",
                  adapter_dir="models/lora/poet/cpu_small")                        -> TrainResult
    ExportGGUFSpec(config=cfg, adapter_dir="models/lora/poet/cpu_small", val="...",
                   out_dir="models/gguf/poet/cpu_small", chat_messages=[...])      -> ExportResult

Over the wire (Modal) the function receives ``spec.model_dump(mode="json")``, rebuilds the spec with
:func:`parse_spec` (by ``kind``), runs it and returns ``result.model_dump(mode="json")``; the caller
re-validates that dict with ``spec.result_type``.

Each step skips work that is already done: :func:`step_fingerprint` (settings + input file hashes) is
compared with the one recorded beside a finished output by :func:`finished`; on a match the recorded
result comes back with ``reused=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from distillery_assets.io import atomic_write_text
from distillery_assets.io.hashing import sha256_file, sha256_text
from distillery_assets.paths import safe_child
from distillery_assets.training.base_model import EMBEDDED_BASE_RELDIR, base_identity, resolve_base
from distillery_assets.training.config import EMBEDDED_BASE, TrainConfig
from distillery_assets.training.perplexity import HeldoutText
from distillery_assets.training.results import ExportResult, StepResult, TrainResult

R = TypeVar("R", bound=StepResult)


# --------------------------------------------------------------------------------- fingerprint and reuse

def step_fingerprint(settings: Any, files: Sequence[Path] = ()) -> str:
    """The one fingerprint of a step: its JSON-able settings plus the sha256 of each input file."""
    body = json.dumps({"settings": settings, "files": [sha256_file(f) for f in files]}, sort_keys=True)
    return sha256_text(body)[:16]


def read_result(record: Path, model: type[R]) -> R | None:
    """The result recorded in ``record``, or None if it is missing or no longer matches ``model``."""
    try:
        return model.model_validate_json(Path(record).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValidationError):
        return None


def finished(record: Path, model: type[R], fingerprint: str, artefact: Path) -> R | None:
    """The recorded result of a finished run with this ``fingerprint`` whose ``artefact`` exists, marked reused."""
    done = read_result(record, model)
    if done is None or getattr(done, "fingerprint", None) != fingerprint or not Path(artefact).exists():
        return None
    return done.model_copy(update={"reused": True})


# ------------------------------------------------------------------------------------------------- specs

def _relative(value: str, info: ValidationInfo) -> str:
    safe_child(Path("/step-root"), value, source=f"step spec field {info.field_name!r}")
    return PurePosixPath(value).as_posix()


RelPath = Annotated[str, AfterValidator(_relative)]
"""A path relative to the step's root (no absolute paths, no ``..``)."""


class StepSpecBase(BaseModel):
    """Base of every step spec. Subclasses set ``kind``, ``result_type`` and implement the three methods."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    result_type: ClassVar[type[StepResult]] = StepResult

    def inputs(self) -> list[str]:
        """Paths (relative to the root) the step reads; uploaded first on Modal."""
        return []

    def outputs(self) -> list[str]:
        """Paths (relative to the root) the step must leave behind; downloaded after it on Modal."""
        return []

    def run(self, root: Path) -> StepResult:
        raise NotImplementedError

    def path(self, field: str, root: Path) -> Path:
        """The absolute path of a spec field under ``root`` (checked again against the real root)."""
        return safe_child(Path(root), getattr(self, field), source=f"step spec field {field!r}")


def _base_input(cfg: TrainConfig) -> list[str]:
    return [EMBEDDED_BASE_RELDIR] if cfg.base_model == EMBEDDED_BASE else []


class TrainLoraSpec(StepSpecBase):
    """Train a LoRA adapter on a ChatML train/val pair; the adapter folder is the output."""

    kind: Literal["train_lora"] = "train_lora"
    result_type: ClassVar[type[StepResult]] = TrainResult
    config: TrainConfig
    train: RelPath
    val: RelPath
    adapter_dir: RelPath

    def inputs(self) -> list[str]:
        return [self.train, self.val, *_base_input(self.config)]

    def outputs(self) -> list[str]:
        return [self.adapter_dir]

    def run(self, root: Path) -> TrainResult:
        from distillery_assets.training.lora import METRICS_FILE, train_lora

        cfg = self.config
        train, val = self.path("train", root), self.path("val", root)
        adapter_dir = self.path("adapter_dir", root)
        base = resolve_base(cfg.base_model, Path(root))
        fingerprint = step_fingerprint({"config": cfg.fingerprint(), "base": base_identity(base)}, [train, val])
        done = finished(adapter_dir / METRICS_FILE, TrainResult, fingerprint, adapter_dir / "adapter_config.json")
        if done is not None:
            return done
        return train_lora(cfg, base, train, val, adapter_dir, fingerprint=fingerprint)


class ExportGGUFSpec(StepSpecBase):
    """Merge an adapter into its base, convert and quantize to GGUF, measure perplexity and a chat reply."""

    kind: Literal["export_gguf"] = "export_gguf"
    result_type: ClassVar[type[StepResult]] = ExportResult
    config: TrainConfig
    adapter_dir: RelPath
    val: RelPath
    out_dir: RelPath
    chat_messages: list[dict[str, str]] | None = None
    chat_max_tokens: int | None = Field(default=None, gt=0,
                                        description="default: export.chat_max_tokens, else the profile's max_seq")
    heldout: HeldoutText | None = None
    """The fixed held-out text scored beside the validation split (its text travels in the spec)."""

    @property
    def gguf_rel(self) -> str:
        """The primary quantization's GGUF; a fallback is named after its own quant (``gguf_rel_for``)."""
        return self.gguf_rel_for(self.config.export.quant)

    def gguf_rel_for(self, quant: str) -> str:
        return f"{self.out_dir}/{self.config.gguf_file_name_for(quant)}"

    @property
    def record_rel(self) -> str:
        """The recorded ``ExportResult`` beside the primary GGUF (a fallback's record is beside its file)."""
        return self.record_rel_for(self.config.export.quant)

    def record_rel_for(self, quant: str) -> str:
        return f"{self.out_dir}/{PurePosixPath(self.config.gguf_file_name_for(quant)).stem}.json"

    def inputs(self) -> list[str]:
        return [self.adapter_dir, self.val, *_base_input(self.config)]

    def outputs(self) -> list[str]:
        """The GGUF and its record; with fallbacks configured the kept file's name is known only after the
        run, so the output is the folder (it holds exactly the kept GGUF and its record)."""
        if len(self.config.export.candidate_quants) > 1:
            return [self.out_dir]
        return [self.gguf_rel, self.record_rel]

    def run(self, root: Path) -> ExportResult:
        from distillery_assets.training.export import export_gguf
        from distillery_assets.training.lora import METRICS_FILE

        cfg = self.config
        adapter_dir, val = self.path("adapter_dir", root), self.path("val", root)
        trained = read_result(adapter_dir / METRICS_FILE, TrainResult)
        if trained is None:
            raise FileNotFoundError(f"{adapter_dir}: no finished adapter ({METRICS_FILE} missing); run train_lora")
        final = safe_child(Path(root), self.gguf_rel, source="export_gguf GGUF file")
        settings = {"adapter": trained.fingerprint, "export": cfg.export.model_dump(), "max_seq": cfg.max_seq,
                    "chat_messages": self.chat_messages, "chat_max_tokens": self.chat_max_tokens,
                    "heldout": None if self.heldout is None else [self.heldout.name, self.heldout.digest]}
        fingerprint = step_fingerprint(settings, [val])
        for quant in cfg.export.candidate_quants:  # whichever quantization a finished run kept
            record = safe_child(Path(root), self.record_rel_for(quant), source="export_gguf result record")
            artefact = safe_child(Path(root), self.gguf_rel_for(quant), source="export_gguf GGUF file")
            done = finished(record, ExportResult, fingerprint, artefact)
            if done is not None:
                return done
        result = export_gguf(cfg, resolve_base(cfg.base_model, Path(root)), adapter_dir, val, final,
                             fingerprint=fingerprint, gguf_path=self.gguf_rel, chat_messages=self.chat_messages,
                             chat_max_tokens=self.chat_max_tokens or cfg.export.chat_max_tokens or cfg.max_seq,
                             heldout=self.heldout, threads=cfg.threads or os.cpu_count() or 2)
        record = safe_child(Path(root), self.record_rel_for(result.quant), source="export_gguf result record")
        atomic_write_text(record, result.record_json())
        return result


# ------------------------------------------------------------------------------------------ registry

STEP_KINDS: dict[str, type[StepSpecBase]] = {"train_lora": TrainLoraSpec, "export_gguf": ExportGGUFSpec}
"""Every step by its ``kind``: what a dict from the wire is parsed into."""


def step_kinds() -> dict[str, type[StepSpecBase]]:
    """:data:`STEP_KINDS` with the steps defined outside this module (``thyme.steps``: it imports this one)."""
    from distillery_assets.filters.train import TrainFilterSpec
    from distillery_assets.thyme.steps import TrainThymeSpec

    STEP_KINDS.setdefault("train_thyme", TrainThymeSpec)
    STEP_KINDS.setdefault("train_filter", TrainFilterSpec)
    return STEP_KINDS

StepSpec = Annotated[Union[TrainLoraSpec, ExportGGUFSpec], Field(discriminator="kind")]  # noqa: UP007
"""The discriminated union of the step specs, for a model that holds a step (``TypeAdapter(StepSpec)``)."""


def parse_spec(data: dict[str, Any]) -> StepSpecBase:
    """A spec from its JSON form, chosen by ``kind``."""
    kind = data.get("kind") if isinstance(data, dict) else None
    kinds = step_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown step {kind!r}; known steps: {', '.join(sorted(kinds))}")
    return kinds[kind].model_validate(data)
