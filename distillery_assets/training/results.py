"""What the fine-tunes' steps return: pydantic models that round-trip through JSON (their base, ``StepResult``,
is :mod:`distillery_assets.steps`'s).

The same types locally and on Modal: the Modal function returns ``result.model_dump(mode="json")`` and the
caller re-validates the dict with the step's ``result_type``. Each finished step also writes its result
beside its output (``record_json``), which is what a later run reuses and what the upload reads.

The judgements a check reports are made here, once, from the numbers in hand:
``TrainResult.loss_improved``, ``ExportResult.ppl_degradation_ok`` (set by the export from its limit, for
the quantization it kept), ``ExportResult.fallback_used`` and ``ExportResult.chat_stopped``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from distillery_assets.steps import StepResult


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpochRecord(_Record):
    epoch: int
    steps: int
    train_loss: float
    val_loss: float


class SplitStats(_Record):
    read: int
    examples: int
    rejected: int
    truncated: int
    tokens: int
    target_tokens: int
    max_len: int


class RejectRecord(_Record):
    source: str
    reason: str


class TrainResult(StepResult):
    kind: Literal["train_lora"] = "train_lora"
    fingerprint: str
    role: str
    profile: str
    base_model: str
    config_fingerprint: str
    device: str
    qlora: bool
    base_val_loss: float
    val_loss: float
    train_loss: float
    improvement: float
    epochs: list[EpochRecord]
    steps: int
    resumed_from_step: int = 0
    train: SplitStats
    val: SplitStats
    rejects: list[RejectRecord]
    trainable_params: int
    total_params: int
    tokens_per_s: float
    train_seconds: float
    wall_seconds: float

    @property
    def loss_improved(self) -> bool:
        """The training check: validation loss after training is below the untouched base model's."""
        return self.val_loss < self.base_val_loss


class GGUFInfo(_Record):
    """What the GGUF header says (``gguf_tools.inspect_gguf``)."""

    file_type: str
    tensor_types: dict[str, int]
    matrix_tensors: int
    matrix_tensors_k_quant: int
    architecture: str | None
    has_chat_template: bool
    eos_token_id: int | None
    eos_token: str | None
    bytes: int


class ChatReply(_Record):
    """One greedy chat reply from the exported GGUF through llama.cpp."""

    messages: list[dict[str, str]]
    prompt: str
    reply: str
    finish_reason: str | None
    completion_tokens: int
    max_tokens: int


class PerplexitySet(_Record):
    """One evaluation set's figures: the validation split (assistant tokens) or the held-out text."""

    name: str
    """``validation`` or ``held-out``."""
    source: str
    """The file it came from."""
    examples: int
    """Conversations (validation) or token windows (held-out)."""
    tokens: int
    """Tokens scored."""
    ppl_merged: float
    ppl_gguf: float
    """The kept GGUF's."""
    ppl_f16: float | None = None


class QuantAttempt(_Record):
    """One quantization tried: its perplexity on every set together, and whether it is within the bound."""

    quant: str
    ppl_gguf: float
    ppl_degradation: float
    within_limit: bool
    gguf_bytes: int
    ppl_by_set: dict[str, float]


class ExportResult(StepResult):
    kind: Literal["export_gguf"] = "export_gguf"
    fingerprint: str
    gguf_file: str
    gguf_path: str
    """Relative to the step's root."""
    quant: str
    """The quantization kept: the primary if it is within the bound, else the first fallback that is."""
    primary_quant: str
    fallback_quants: list[str] = []
    quant_attempts: list[QuantAttempt]
    """Every quantization tried, in order; the last one is the kept one."""
    intermediate: str
    merge_dtype: str
    gguf: GGUFInfo
    merged_bytes: int
    intermediate_bytes: int
    gguf_bytes: int
    ppl_merged: float
    """Over every evaluation set together (token-weighted), like ``ppl_gguf`` and ``ppl_degradation``."""
    ppl_gguf: float
    ppl_intermediate_gguf: float | None
    ppl_degradation: float
    ppl_limit: float
    ppl_degradation_ok: bool
    ppl_examples: int
    """Validation conversations scored."""
    ppl_tokens: int
    """Tokens scored over every set."""
    ppl_sets: list[PerplexitySet]
    device: str
    chat: ChatReply | None
    timings: dict[str, float]

    @property
    def fallback_used(self) -> bool:
        """The primary quantization degraded perplexity beyond the bound and a fallback was kept."""
        return self.quant != self.primary_quant

    @property
    def chat_stopped(self) -> bool:
        """The chat check: the reply ended on the end-of-turn token (``stop``), not at ``max_tokens``."""
        return self.chat is not None and self.chat.finish_reason == "stop"
