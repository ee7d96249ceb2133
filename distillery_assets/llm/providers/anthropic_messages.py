"""Provider ``anthropic``: the Messages API through the official ``anthropic`` SDK.

System turns are sent in ``system`` (Anthropic takes no system role in ``messages``); JSON requests use
``output_config={"format": {"type": "json_schema", "schema": ...}}`` (structured outputs) and the client
still validates the reply. SDK retries are off (``max_retries=0``): the client's policy owns them.
API version 2026-10-21 (sent by anthropic SDK 2.x) rejects ``temperature``/``top_p``/``top_k`` and the
SDK no longer accepts them, so ``temperature`` and ``seed`` are only part of the cache key here.
"""

from __future__ import annotations

from typing import Any

from distillery_assets.llm.errors import ConfigError, RetryableError
from distillery_assets.llm.providers.base import ProviderReply, RemoteProvider, sdk_errors
from distillery_assets.llm.types import ChatMessage

DEFAULT_MODEL = "claude-sonnet-4-5"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "refusal"}


class AnthropicProvider(RemoteProvider):
    name = "anthropic"
    default_key_env = "ANTHROPIC_API_KEY"
    default_model_id = DEFAULT_MODEL

    def _make_sdk(self):
        import anthropic

        key = self._api_key()
        if not key:
            raise ConfigError(f"provider anthropic: environment variable {self.api_key_env} is not set")
        return anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s)

    def call(self, messages: list[ChatMessage], *, model: str, temperature: float, max_tokens: int,
             json_schema: dict[str, Any] | None, stop: list[str] | None, seed: int | None,
             timeout_s: float) -> ProviderReply:
        import anthropic

        system = "\n\n".join(m.content for m in messages if m.role == "system")
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            "timeout": timeout_s,
        }
        if system:
            kwargs["system"] = system
        if stop:
            kwargs["stop_sequences"] = list(stop)
        if json_schema is not None:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": json_schema}}
        client = self._sdk()
        with sdk_errors(anthropic, timeout_s, retry_status=(529,)):  # 529: Anthropic is overloaded
            resp = client.messages.create(**kwargs)
        if isinstance(resp, str) or not hasattr(resp, "content"):
            raise RetryableError(f"malformed response: {str(resp)[:200]!r}")
        text = "".join(getattr(block, "text", "") for block in resp.content if getattr(block, "type", "") == "text")
        return ProviderReply(
            text=text,
            finish_reason=_FINISH.get(resp.stop_reason or "", resp.stop_reason),
            input_tokens=int(resp.usage.input_tokens or 0),
            output_tokens=int(resp.usage.output_tokens or 0),
        )
