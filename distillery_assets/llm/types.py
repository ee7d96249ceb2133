"""The one call shape shared by every provider: messages in, text or validated JSON out, usage recorded.

``LLMRequest.key(provider, model, endpoint)`` is the cache key: the sha256 of a canonical JSON rendering of
everything that changes the answer (provider, the server when it is not the provider's default, resolved
model, messages, temperature, max_tokens, json_schema, stop, seed). ``tag`` is deliberately left out: the
same prompt asked by two assets is the same call and is paid for once.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distillery_assets.io.hashing import sha256_text


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class LLMRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1)
    model: str | None = None
    json_schema: dict[str, Any] | None = None
    stop: list[str] | None = None
    seed: int | None = None
    accept_truncated: bool = False  # a reply cut off at max_tokens counts as a result (and says so)
    tag: str = "untagged"

    @field_validator("messages")
    @classmethod
    def _needs_a_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" for m in messages):
            raise ValueError("an LLM request needs at least one user message")
        return messages

    def canonical(self, provider: str, model: str, endpoint: str | None = None) -> str:
        """The rendered request the cache key is computed from (stable key order, no whitespace).
        ``endpoint``: the server (``providers.base.endpoint_of``), None for the provider's default one."""
        body = {
            "provider": provider,
            "model": model,
            "messages": [[m.role, m.content] for m in self.messages],
            "temperature": round(float(self.temperature), 6),
            "max_tokens": int(self.max_tokens),
            "json_schema": self.json_schema,
            "stop": list(self.stop) if self.stop else None,
            "seed": self.seed,
        }
        if self.accept_truncated:  # only then, so every other request keeps the key it always had
            body["accept_truncated"] = True
        if endpoint:  # only for a server other than the provider's default: cached answers keep their keys
            body["endpoint"] = endpoint
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def key(self, provider: str, model: str, endpoint: str | None = None) -> str:
        return sha256_text(self.canonical(provider, model, endpoint))


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = 0.0


class LLMResult(BaseModel):
    ok: bool
    text: str | None = None
    parsed: dict[str, Any] | None = None
    error: str | None = None
    # why a result is not ok: "length" (cut off at max_tokens), "invalid_json" (a whole reply that never
    # matched the schema, re-asks included), "provider" (HTTP, timeouts, configuration), "claimed" (another
    # run is asking the same request and did not answer in time), or the finish reason of a reply that did
    # not stop by itself ("content_filter", "refusal", "tool_call", "pause_turn", "no_finish_reason"...)
    error_kind: str | None = None
    finish_reason: str | None = None  # providers.base.finish_reason's vocabulary: "stop" for a result
    cached: bool = False
    provider: str
    model: str
    request_key: str
    attempts: int = 0  # provider calls this answer took (retries and JSON re-asks included; 0 = from the cache)
    usage: Usage = Field(default_factory=Usage)
