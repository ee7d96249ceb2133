"""Provider ``local``: a GGUF model run in this process by llama-cpp-python.

The model is loaded lazily, once per process per (path, n_ctx, n_threads, n_threads_batch), under a lock; a
llama.cpp context is not thread-safe, so generation is serialised by the same per-model lock. Its threads come
from the one thread policy (``distillery_assets.threads``: one decode thread, the step's share of the cores for
the prompt) unless ``n_threads`` / ``n_threads_batch`` are given. JSON requests use
llama.cpp's grammar-constrained ``response_format={"type": "json_object", "schema": ...}``.
Per-request timeouts cannot interrupt a running llama.cpp generation; ``max_tokens`` bounds it instead.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from distillery_assets.llm.errors import ConfigError, ProviderError
from distillery_assets.llm.providers.base import ProviderReply, finish_reason
from distillery_assets.llm.types import ChatMessage

_MODELS: dict[tuple[str, int, int, int], Any] = {}
_MODEL_LOCKS: dict[tuple[str, int, int, int], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _load_model(path: str, n_ctx: int, n_threads: int, n_threads_batch: int):
    """Load a GGUF file with llama-cpp-python (the expensive step a cache hit must never reach)."""
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads_batch, verbose=False)


class LocalProvider:
    name = "local"

    def __init__(self, gguf_path: str | Path | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 n_threads_batch: int | None = None):
        from distillery_assets.threads import llama_threads

        self._path = Path(gguf_path) if gguf_path else None
        self.n_ctx = int(n_ctx)
        threads = llama_threads(n_threads, n_threads_batch)
        self.n_threads, self.n_threads_batch = threads["n_threads"], threads["n_threads_batch"]
        self._paths: dict[str, Path] = {}

    @property
    def path(self) -> Path:
        if self._path is None:
            from distillery_assets.embedded import smollm2_gguf_path

            self._path = smollm2_gguf_path()
        return self._path

    def model_id(self, model: str | None) -> str:
        """``<file name>#<size in bytes>``: a re-exported GGUF of the same name gets fresh cache keys."""
        path = Path(model) if model else self.path
        if not path.is_file():
            raise ConfigError(f"local LLM: GGUF file not found: {path} (set DISTILLERY_LLM_GGUF)")
        ident = f"{path.name}#{path.stat().st_size}"
        self._paths[ident] = path
        return ident

    def _resolve_path(self, model: str) -> Path:
        if model not in self._paths:
            self.model_id(model)
        return self._paths.get(model) or Path(model)

    def _model(self, path: Path):
        key = (str(path.resolve()), self.n_ctx, self.n_threads, self.n_threads_batch)
        with _REGISTRY_LOCK:
            lock = _MODEL_LOCKS.setdefault(key, threading.Lock())
        with lock:
            if key not in _MODELS:
                _MODELS[key] = _load_model(*key)
        return _MODELS[key], lock

    def prepare(self, model: str) -> None:
        """Load the model (once per process) before the first timed call."""
        self._model(self._resolve_path(model))

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
        llm, lock = self._model(self._resolve_path(model))
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if stop:
            kwargs["stop"] = list(stop)
        if seed is not None:
            kwargs["seed"] = seed
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        try:
            with lock:
                out = llm.create_chat_completion(**kwargs)
        except ValueError as exc:  # e.g. prompt longer than n_ctx
            raise ProviderError(f"llama.cpp rejected the request: {exc}") from exc
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        message = choice.get("message") or {}
        return ProviderReply(
            text=message.get("content") or "",
            finish_reason=finish_reason(choice.get("finish_reason"),
                                        tool_call=bool(message.get("tool_calls") or message.get("function_call"))),
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cost_usd=0.0,
        )
