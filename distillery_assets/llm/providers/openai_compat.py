"""Provider ``openai``: the Chat Completions API through the official ``openai`` SDK, at any base URL
(OpenAI, OpenRouter, LM Studio, vLLM, a llama.cpp server, or the fake server in tests.support.fakeapi).

Calls are async (``openai.AsyncOpenAI``, one HTTP connection pool per client event loop), so hundreds of
requests in flight cost one thread. The SDK's own retries are switched off (``max_retries=0``): the client's retry policy owns them, so
Retry-After, backoff and the usage row see every attempt. JSON requests ask for
``response_format={"type": "json_schema", ...}``; a server that refuses that (a 400, or the 500 that
llama-cpp-python's server answers, mentioning response_format/json_schema) is asked with ``{"type": "json_object"}`` from then on, and the client still
validates the answer against the schema.

The output budget goes as ``max_completion_tokens`` to OpenAI's own API (``max_tokens`` is deprecated there and
refused by reasoning models: o1/o3/o4, gpt-5.x, gpt-6.x) and to a reasoning model anywhere; other servers
(LM Studio, vLLM, llama.cpp, whose llama-cpp-python server ignores a field it does not know, so a budget sent
as ``max_completion_tokens`` would be no budget at all) get ``max_tokens``. ``temperature`` is left out for
reasoning models (they refuse anything but the default). A 400 that refuses either one for another model
("use 'max_completion_tokens' instead", "'temperature' does not support ...") is remembered for that model
and the request is sent again without it: the refusal costs nothing and is not a failed attempt.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any
from urllib.parse import urlsplit

from distillery_assets.llm.errors import ConfigError, RetryableError
from distillery_assets.llm.jsonout import with_schema_instruction
from distillery_assets.llm.providers.base import ProviderReply, RemoteProvider, finish_reason, sdk_errors
from distillery_assets.llm.types import ChatMessage

DEFAULT_MODEL = "gpt-5.4-mini"  # no shutdown date in openai 3.54.0's ChatModel list (gpt-4o-mini: 2027-01-14)


_REASONING_MODEL = re.compile(r"^(?:openai/)?(?:o\d+(?:-|$)|gpt-5|gpt-6)", re.IGNORECASE)
_BUDGET_PARAMS = ("max_tokens", "max_completion_tokens")


def is_reasoning_model(model: str) -> bool:
    """OpenAI's reasoning families (o1/o3/o4..., gpt-5.x, gpt-6.x): ``max_completion_tokens`` only, no
    ``temperature`` (the ``-chat`` variants take a temperature)."""
    return bool(_REASONING_MODEL.match(model.strip()))


class OpenAIProvider(RemoteProvider):
    name = "openai"
    default_key_env = "OPENAI_API_KEY"
    default_model_id = DEFAULT_MODEL
    default_base_url = "https://api.openai.com/v1"
    base_url_env = "OPENAI_BASE_URL"
    _json_schema_supported = True  # set False on the instance once its server refuses json_schema

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._completion_tokens_models: set[str] = set()  # refused max_tokens here: send max_completion_tokens
        self._no_temperature_models: set[str] = set()  # refused temperature here: leave it out

    def _openai_api(self) -> bool:
        """True when the calls go to OpenAI's own API (no base URL, or one on api.openai.com)."""
        url = self.base_url or os.environ.get("OPENAI_BASE_URL")
        return not url or (urlsplit(url).hostname or "").lower() == "api.openai.com"

    def sampling(self, model: str, temperature: float, max_tokens: int) -> dict[str, Any]:
        """The budget and temperature parameters for ``model`` (see the module docstring)."""
        reasoning = is_reasoning_model(model)
        completion = reasoning or self._openai_api() or model in self._completion_tokens_models
        out: dict[str, Any] = {"max_completion_tokens" if completion else "max_tokens": max_tokens}
        if not (reasoning and "-chat" not in model) and model not in self._no_temperature_models:
            out["temperature"] = temperature
        return out

    def _learn_refusal(self, exc: Exception, kwargs: dict[str, Any]) -> bool:
        """Remember a 400 that refuses ``max_tokens`` or ``temperature`` for this model; True when it did (the
        request is worth sending again without it)."""
        text = f"{getattr(exc, 'param', None) or ''} {getattr(exc, 'message', None) or exc}".lower()
        model = kwargs["model"]
        if "max_tokens" in kwargs and "max_completion_tokens" in text:
            self._completion_tokens_models.add(model)
            return True
        if "temperature" in kwargs and "temperature" in text and "support" in text:
            self._no_temperature_models.add(model)
            return True
        return False

    async def _create(self, client, kwargs: dict[str, Any], temperature: float, **extra: Any):
        """``chat.completions.create``, sent again (parameters fixed) after a refusal _learn_refusal knows."""
        import openai

        while True:
            try:
                return await client.chat.completions.create(**kwargs, **extra)
            except openai.BadRequestError as exc:
                if not self._learn_refusal(exc, kwargs):
                    raise
                budget = next(kwargs[p] for p in _BUDGET_PARAMS if p in kwargs)
                kwargs = {k: v for k, v in kwargs.items() if k not in (*_BUDGET_PARAMS, "temperature")}
                kwargs.update(self.sampling(kwargs["model"], temperature, budget))

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

    async def _json_object(self, client, kwargs: dict[str, Any], messages: list[ChatMessage], schema: dict[str, Any],
                           temperature: float):
        """JSON mode without a schema: the schema goes into the system turn (which also says "JSON",
        as OpenAI's json_object mode requires)."""
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        rest = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        kwargs = {**kwargs, "messages": [{"role": "system", "content": with_schema_instruction(system, schema)}] + rest}
        return await self._create(client, kwargs, temperature, response_format={"type": "json_object"})

    def body(self, messages: list[ChatMessage], *, model: str, temperature: float, max_tokens: int,
             json_schema: dict[str, Any] | None, stop: list[str] | None, seed: int | None) -> dict[str, Any]:
        """A batch item's Chat Completions body: what ``acall`` sends first (``json_schema``, or ``json_object``
        with the schema in the system turn once this server refused ``json_schema``)."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            **self.sampling(model, temperature, max_tokens),
        }
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        if json_schema is not None and self._json_schema_supported:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "result", "schema": json_schema, "strict": False}}
        elif json_schema is not None:
            system = "\n\n".join(m.content for m in messages if m.role == "system")
            rest = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
            body["messages"] = [{"role": "system", "content": with_schema_instruction(system, json_schema)}] + rest
            body["response_format"] = {"type": "json_object"}
        return body

    @staticmethod
    def reply(resp: Any, batch_id: str | None = None) -> ProviderReply:
        """A chat completion (an online answer, or a batch output line's ``response.body``) as a ProviderReply."""
        if isinstance(resp, str) or not getattr(resp, "choices", None):
            raise RetryableError(f"malformed response: {str(resp)[:200]!r}")
        choice = resp.choices[0]
        usage = resp.usage
        message = choice.message
        refusal = getattr(message, "refusal", None)  # a structured-output refusal comes with finish_reason "stop"
        return ProviderReply(
            text=message.content or refusal or "",
            finish_reason=finish_reason(choice.finish_reason, refusal=bool(refusal),
                                        tool_call=bool(getattr(message, "tool_calls", None)
                                                       or getattr(message, "function_call", None))),
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            batch_id=batch_id,
        )

    async def acall(self, messages: list[ChatMessage], *, model: str, temperature: float, max_tokens: int,
                    json_schema: dict[str, Any] | None, stop: list[str] | None, seed: int | None,
                    timeout_s: float) -> ProviderReply:
        import openai

        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            **self.sampling(model, temperature, max_tokens),
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
                    resp = await self._create(client, kwargs, temperature, response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "result", "schema": json_schema, "strict": False}})
                except (openai.BadRequestError, openai.InternalServerError) as exc:
                    # llama-cpp-python 0.3.x's server answers an unsupported json_schema with a 500.
                    text = str(exc).lower()
                    if "response_format" not in text and "json_schema" not in text:
                        raise
                    self._json_schema_supported = False
                    resp = await self._json_object(client, kwargs, messages, json_schema, temperature)
            elif json_schema is not None:
                resp = await self._json_object(client, kwargs, messages, json_schema, temperature)
            else:
                resp = await self._create(client, kwargs, temperature)
        return self.reply(resp)
