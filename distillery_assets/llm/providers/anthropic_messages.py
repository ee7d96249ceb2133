"""Provider ``anthropic``: the Messages API through the official ``anthropic`` SDK.

System turns are sent in ``system`` (Anthropic takes no system role in ``messages``); JSON requests use
``output_config={"format": {"type": "json_schema", "schema": ...}}`` (structured outputs) with the schema
passed through the SDK's ``anthropic.transform_schema`` first, as ``messages.parse`` does and
``messages.create`` does not: the API refuses an object without ``additionalProperties: false`` and keywords
such as ``minLength``/``minimum``/``maximum`` (a 400), which pydantic schemas carry; ``transform_schema``
closes every object and moves those keywords into the description. The client still validates the reply
against the original schema, so those constraints still hold. SDK retries are off (``max_retries=0``): the client's policy owns them.
API version 2026-10-21 (sent by anthropic SDK 2.x) rejects ``temperature``/``top_p``/``top_k`` and the
SDK no longer accepts them, so ``temperature`` and ``seed`` are only part of the cache key here.
"""

from __future__ import annotations

from typing import Any

from distillery_assets.llm.errors import ConfigError, RetryableError
from distillery_assets.llm.providers.base import ProviderReply, RemoteProvider, finish_reason, sdk_errors
from distillery_assets.llm.types import ChatMessage

DEFAULT_MODEL = "claude-sonnet-5-5"  # current Sonnet; not in anthropic 2.12.0's DEPRECATED_MODELS


def api_schema(json_schema: dict[str, Any]) -> dict[str, Any]:
    """``json_schema`` as the Messages API accepts it (``anthropic.transform_schema``; the input is not changed)."""
    import anthropic

    try:
        return anthropic.transform_schema(json_schema)
    except (TypeError, ValueError) as exc:  # e.g. a schema with no "type": the API would refuse it too
        raise ConfigError(f"provider anthropic: the JSON schema cannot be sent as a structured output: {exc}") from exc


class AnthropicProvider(RemoteProvider):
    name = "anthropic"
    default_key_env = "ANTHROPIC_API_KEY"
    default_model_id = DEFAULT_MODEL
    default_base_url = "https://api.anthropic.com"
    base_url_env = "ANTHROPIC_BASE_URL"

    def _make_sdk(self):
        import anthropic

        key = self._api_key()
        if not key:
            raise ConfigError(f"provider anthropic: environment variable {self.api_key_env} is not set")
        return anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s)

    def params(self, messages: list[ChatMessage], *, model: str, max_tokens: int,
               json_schema: dict[str, Any] | None, stop: list[str] | None) -> dict[str, Any]:
        """The Messages API body of one request (``messages.create``'s arguments, and a batch item's ``params``)."""
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
        }
        if system:
            kwargs["system"] = system
        if stop:
            kwargs["stop_sequences"] = list(stop)
        if json_schema is not None:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": api_schema(json_schema)}}
        return kwargs

    @staticmethod
    def reply(resp: Any, batch_id: str | None = None) -> ProviderReply:
        """A ``Message`` (an online answer, or a batch item's ``result.message``) as a ProviderReply."""
        if isinstance(resp, str) or not hasattr(resp, "content"):
            raise RetryableError(f"malformed response: {str(resp)[:200]!r}")
        text = "".join(getattr(block, "text", "") for block in resp.content if getattr(block, "type", "") == "text")
        tool_call = any(getattr(block, "type", "") in ("tool_use", "server_tool_use") for block in resp.content)
        return ProviderReply(
            text=text,
            # end_turn / stop_sequence: stopped by itself; max_tokens: cut off; refusal, pause_turn,
            # model_context_window_exceeded, tool_use: named failures (providers.base.finish_reason)
            finish_reason=finish_reason(resp.stop_reason, tool_call=tool_call),
            input_tokens=int(resp.usage.input_tokens or 0),
            output_tokens=int(resp.usage.output_tokens or 0),
            batch_id=batch_id,
        )

    def call(self, messages: list[ChatMessage], *, model: str, temperature: float, max_tokens: int,
             json_schema: dict[str, Any] | None, stop: list[str] | None, seed: int | None,
             timeout_s: float) -> ProviderReply:
        import anthropic

        kwargs = self.params(messages, model=model, max_tokens=max_tokens, json_schema=json_schema, stop=stop)
        client = self._sdk()
        with sdk_errors(anthropic, timeout_s, retry_status=(529,)):  # 529: Anthropic is overloaded
            resp = client.messages.create(**kwargs, timeout=timeout_s)
        return self.reply(resp)
