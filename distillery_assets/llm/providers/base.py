"""The contract every provider module fulfils; the client never sees an SDK type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from distillery_assets.llm.types import ChatMessage


@dataclass(frozen=True)
class ProviderReply:
    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None  # when the provider reports it (fal/OpenRouter); else the price table


class Provider(Protocol):
    """A provider implements ``call`` (blocking; the client runs it in a thread pool sized to its
    concurrency) or ``acall`` (the same signature, async; run on the client's event loop). Both: ``acall``
    wins."""

    name: str

    def model_id(self, model: str | None) -> str:
        """The concrete model a request will use (resolves None to the default). Must not load anything."""

    def call(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        temperature: float,
        max_tokens: int,
        json_schema: dict[str, Any] | None,
        stop: list[str] | None,
        seed: int | None,
        timeout_s: float,
    ) -> ProviderReply:
        """One attempt. Raises RetryableError (429/5xx/timeout/connection) or ProviderError."""
