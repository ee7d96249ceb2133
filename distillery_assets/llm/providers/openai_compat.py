"""Provider ``openai``: the Chat Completions API through the official ``openai`` SDK, at any base URL
(OpenAI, OpenRouter, LM Studio, vLLM, a llama.cpp server, or the fake server in tests.support.fakeapi).

Calls are async (``openai.AsyncOpenAI``, one HTTP connection pool per client event loop), so hundreds of
requests in flight cost one thread. The SDK's own retries are switched off (``max_retries=0``): the client's retry policy owns them, so
Retry-After, backoff and the usage row see every attempt. JSON requests ask for
``response_format={"type": "json_schema", ...}``; a server that refuses that (a 400, or the 500 that
llama-cpp-python's server answers, mentioning response_format/json_schema) is asked with ``{"type": "json_object"}`` from then on, and the client still
validates the answer against the schema.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distillery_assets.llm.errors import ConfigError, RetryableError
from distillery_assets.llm.jsonout import with_schema_instruction
from distillery_assets.llm.providers.base import ProviderReply, RemoteProvider, sdk_errors
from distillery_assets.llm.types import ChatMessage

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAIProvider(RemoteProvider):
    name = "openai"
    default_key_env = "OPENAI_API_KEY"
    default_model_id = DEFAULT_MODEL
    _json_schema_supported = True  # set False on the instance once its server refuses json_schema

    def _scope(self) -> object:
        """The running event loop: an httpx pool (so an AsyncOpenAI client) belongs to one loop."""
        return asyncio.get_running_loop()

    def _make_sdk(self):
        import openai

        key = self._api_key()
        if not key:
            if not self.base_url:
                raise ConfigError(f"provider openai: environment variable {self.api_key_env} is not set")
            key = "not-needed"  # local servers (LM Studio, vLLM, llama.cpp) accept any key
        return openai.AsyncOpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s)

    async def aprepare(self, model: str) -> None:
        """Import the SDK and make the HTTP client before the first timed call."""
        self._sdk()

    async def aclose(self) -> None:
        """Close the HTTP connection pool (the next call opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @staticmethod
    async def _json_object(client, kwargs: dict[str, Any], messages: list[ChatMessage], schema: dict[str, Any]):
        """JSON mode without a schema: the schema goes into the system turn (which also says "JSON",
        as OpenAI's json_object mode requires)."""
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        rest = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        kwargs = {**kwargs, "messages": [{"role": "system", "content": with_schema_instruction(system, schema)}] + rest}
        return await client.chat.completions.create(**kwargs, response_format={"type": "json_object"})

    async def acall(self, messages: list[ChatMessage], *, model: str, temperature: float, max_tokens: int,
                    json_schema: dict[str, Any] | None, stop: list[str] | None, seed: int | None,
                    timeout_s: float) -> ProviderReply:
        import openai

        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
            "timeout": timeout_s,
        }
        if stop:
            kwargs["stop"] = list(stop)
        if seed is not None:
            kwargs["seed"] = seed
        client = self._sdk()
        with sdk_errors(openai, timeout_s):
            if json_schema is not None and self._json_schema_supported:
                try:
                    resp = await client.chat.completions.create(**kwargs, response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "result", "schema": json_schema, "strict": False}})
                except (openai.BadRequestError, openai.InternalServerError) as exc:
                    # llama-cpp-python 0.3.x's server answers an unsupported json_schema with a 500.
                    text = str(exc).lower()
                    if "response_format" not in text and "json_schema" not in text:
                        raise
                    self._json_schema_supported = False
                    resp = await self._json_object(client, kwargs, messages, json_schema)
            elif json_schema is not None:
                resp = await self._json_object(client, kwargs, messages, json_schema)
            else:
                resp = await client.chat.completions.create(**kwargs)
        if isinstance(resp, str) or not getattr(resp, "choices", None):
            raise RetryableError(f"malformed response: {str(resp)[:200]!r}")
        choice = resp.choices[0]
        usage = resp.usage
        return ProviderReply(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )
