"""In-test provider double for the LLM client tests: scripted replies and failures, counts every call."""

from __future__ import annotations

import threading
from collections.abc import Callable

from distillery_assets.llm.errors import ProviderError, RetryableError
from distillery_assets.llm.providers.base import ProviderReply


class ScriptedProvider:
    """``steps`` are consumed one per call: a str (reply text), a ProviderReply, or an exception to raise.
    When they run out, ``default(messages)`` answers."""

    name = "scripted"

    def __init__(self, steps=None, default: Callable | None = None, model: str = "m-1"):
        self.steps = list(steps or [])
        self.default = default or (lambda messages: "echo: " + messages[-1].content)
        self.model = model
        self.calls: list[list] = []
        self._lock = threading.Lock()

    def model_id(self, model):
        return model or self.model

    def call(self, messages, *, model, temperature, max_tokens, json_schema, stop, seed, timeout_s):
        with self._lock:
            self.calls.append(list(messages))
            step = self.steps.pop(0) if self.steps else None
        if step is None:
            step = self.default(messages)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, ProviderReply):
            return step
        return ProviderReply(text=step, finish_reason="stop", input_tokens=10, output_tokens=5)


__all__ = ["ProviderError", "RetryableError", "ScriptedProvider"]
