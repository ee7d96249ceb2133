"""The fine-tunes' compute steps: a LoRA trained and exported to GGUF, as typed specs
(:class:`distillery_assets.steps.StepSpec`, run the same way in process and on Modal).

    TrainLoraSpec(config=cfg, train="poetry/poet/train.jsonl", val="poetry/poet/val.jsonl",
                  adapter_dir="models/lora/poet/cpu_small")                        -> TrainResult
    ExportGGUFSpec(config=cfg, adapter_dir="models/lora/poet/cpu_small", val="...",
                   out_dir="models/gguf/poet/cpu_small", chat_messages=[...])      -> ExportResult

Both skip work that is already done: their fingerprint (settings + input file hashes) is compared with the
one recorded beside a finished output; on a match the recorded result comes back with ``reused=True``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field

from distillery_assets.io import atomic_write_text
from distillery_assets.paths import safe_child
from distillery_assets.steps import RelPath, StepSpec, finished, read_result, step_fingerprint
from distillery_assets.training.base_model import EMBEDDED_BASE_RELDIR, base_identity, resolve_base
from distillery_assets.training.config import EMBEDDED_BASE, TrainConfig
from distillery_assets.training.perplexity import HeldoutText
from distillery_assets.training.results import ExportResult, TrainResult


def _base_input(cfg: TrainConfig) -> list[str]:
    return [EMBEDDED_BASE_RELDIR] if cfg.base_model == EMBEDDED_BASE else []


class TrainLoraSpec(StepSpec[TrainResult]):
    """Train a LoRA adapter on a ChatML train/val pair; the adapter folder is the output."""

    kind: Literal["train_lora"] = "train_lora"
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


class ExportGGUFSpec(StepSpec[ExportResult]):
    """Merge an adapter into its base, convert and quantize to GGUF, measure perplexity and a chat reply."""

    kind: Literal["export_gguf"] = "export_gguf"
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
                             heldout=self.heldout, threads=cfg.threads)  # None: distillery_assets.threads
        record = safe_child(Path(root), self.record_rel_for(result.quant), source="export_gguf result record")
        atomic_write_text(record, result.record_json())
        return result
