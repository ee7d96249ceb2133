"""Provider ``anthropic``: the Messages API through the official ``anthropic`` SDK.

System turns are sent in ``system`` (Anthropic takes no system role in ``messages``); JSON requests use
``output_config={"format": {"type": "json_schema", "schema": ...}}`` (structured outputs) and the client
still validates the reply. SDK retries are off (``max_retries=0``): the client's policy owns them.
API version 2026-10-21 (sent by anthropic SDK 2.x) rejects ``temperature``/``top_p``/``top_k`` and the
SDK no longer accepts them, so ``temperature`` and ``seed`` are only part of the cache key here.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from distillery_assets.llm.errors import ConfigError, ProviderError, RetryableError, parse_retry_after, retryable_status
from distillery_assets.llm.providers.base import ProviderReply
from distillery_assets.llm.types import ChatMessage

DEFAULT_MODEL = "claude-sonnet-4-5"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "refusal"}


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, api_key_env: str = "ANTHROPIC_API_KEY", base_url: str | None = None,
                 default_model: str | None = None, timeout_s: float = 120.0):
        self.api_key_env = api_key_env
        self.base_url = base_url
        self.default_model = default_model or DEFAULT_MODEL
        self.timeout_s = timeout_s
        self._client = None
        self._lock = threading.Lock()

    def model_id(self, model: str | None) -> str:
        return model or self.default_model

    def _sdk(self):
        with self._lock:
            if self._client is None:
                import anthropic

                key = os.environ.get(self.api_key_env)
                if not key:
                    raise ConfigError(f"provider anthropic: environment variable {self.api_key_env} is not set")
                self._client = anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=0,
                                                   timeout=self.timeout_s)
            return self._client

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
        try:
            resp = client.messages.create(**kwargs)
        except anthropic.APITimeoutError as exc:
            raise RetryableError(f"timeout after {timeout_s:g}s") from exc
        except anthropic.APIConnectionError as exc:
            raise RetryableError(f"connection error: {exc}") from exc
        except anthropic.APIStatusError as exc:
            message = f"HTTP {exc.status_code}: {exc.message}"
            if retryable_status(exc.status_code) or exc.status_code == 529:
                raise RetryableError(message, parse_retry_after(exc.response.headers)) from exc
            raise ProviderError(message) from exc
        except ValueError as exc:  # a 200 whose body is not JSON (proxy error pages and the like)
            raise RetryableError(f"malformed response body: {exc}") from exc
        except anthropic.APIError as exc:
            raise RetryableError(f"malformed response: {exc}") from exc
        if isinstance(resp, str) or not hasattr(resp, "content"):
            raise RetryableError(f"malformed response: {str(resp)[:200]!r}")
        text = "".join(getattr(block, "text", "") for block in resp.content if getattr(block, "type", "") == "text")
        return ProviderReply(
            text=text,
            finish_reason=_FINISH.get(resp.stop_reason or "", resp.stop_reason),
            input_tokens=int(resp.usage.input_tokens or 0),
            output_tokens=int(resp.usage.output_tokens or 0),
        )
