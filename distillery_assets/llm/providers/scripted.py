"""Provider ``scripted``: answers from a list you give it, for tests of code that uses the LLM client.

Not selectable from settings; pass it as ``build_client(settings, provider=ScriptedProvider([...]))`` or
``LLMClient(ScriptedProvider(...), cache_dir=...)``: the code under test then runs through the real client
(cache, retries, JSON checks and re-asks, usage rows). ``steps`` are consumed one per call: a str (the reply
text), a ProviderReply, or an exception to raise (RetryableError / ProviderError to exercise retries and
rejections). When they run out, ``default(messages, **settings)`` answers in the same forms (by default an
echo of the last message); ``settings`` are the call's ``model``, ``temperature``, ``max_tokens``,
``json_schema``, ``stop`` and ``seed``, to answer by them. Every call's messages are kept in ``calls``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from distillery_assets.llm.providers.base import ProviderReply
from distillery_assets.llm.types import ChatMessage


def _echo(messages: list[ChatMessage], **settings: Any) -> str:
    return "echo: " + messages[-1].content


class ScriptedProvider:
    name = "scripted"

    def __init__(self, steps: list[Any] | None = None, default: Callable[..., Any] | None = None,
                 model: str = "m-1"):
        self.steps = list(steps or [])
        self.default = default or _echo
        self.model = model
        self.calls: list[list[ChatMessage]] = []
        self._lock = threading.Lock()

    def model_id(self, model: str | None) -> str:
        return model or self.model

    def call(self, messages, *, model, temperature, max_tokens, json_schema, stop, seed, timeout_s) -> ProviderReply:
        with self._lock:
            self.calls.append(list(messages))
            step = self.steps.pop(0) if self.steps else None
        if step is None:
            step = self.default(messages, model=model, temperature=temperature, max_tokens=max_tokens,
                                json_schema=json_schema, stop=stop, seed=seed)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, ProviderReply):
            return step
        return ProviderReply(text=str(step), finish_reason="stop", input_tokens=10, output_tokens=5)
