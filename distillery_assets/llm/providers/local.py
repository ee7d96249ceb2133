"""Provider ``local``: a GGUF model run in this process by llama-cpp-python.

The model is loaded lazily, once per process per (path, n_ctx, n_threads, n_threads_batch), under a lock; a
llama.cpp context is not thread-safe, so generation is serialised by the same per-model lock. Its threads come
from the one thread policy (``distillery_assets.threads``: one decode thread, the step's share of the cores for
the prompt) unless ``n_threads`` / ``n_threads_batch`` are given. JSON requests use
llama.cpp's grammar-constrained ``response_format={"type": "json_object", "schema": ...}``.
Per-request timeouts cannot interrupt a running llama.cpp generation; ``max_tokens`` bounds it instead.

A reply cut off at ``max_tokens`` is never generated twice. The client asks again with a larger budget
(``LLMClient``'s ``length_retries``); this provider remembers each cut-off reply (text and token count, per
model, messages, temperature, stop and seed) and answers the same request with a larger budget by continuing
that reply: the prompt plus the text so far is the new prompt (llama.cpp finds it already evaluated, its
longest common prefix with the last evaluation) and only the missing tokens are decoded. The answer is what one
ask with the larger budget would give: autoregressive sampling of the same model, whose first tokens do not
depend on the budget. Each call reports as output tokens the tokens it decoded, so the client's sums count
every generated token once. JSON requests (a grammar whose state a continuation would have to rebuild) are
asked afresh. ``benchmarks/llm_waste.py`` counts decoded against kept tokens both ways.

A request without a seed gets one derived from what it asks (model, messages, temperature, stop, schema; not the
budget): llama-cpp-python would otherwise draw each call's seed from the previous call's, so a reply depended on
which requests the same model had answered before it in this process (an in-process run, a reordered step). Now
the same request gets the same sample whatever ran before, which is what the cache already assumes (one key, one
answer), and what makes a step's output independent of the run's step order.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from distillery_assets.llm.errors import ConfigError, ProviderError
from distillery_assets.llm.providers.base import ProviderReply, finish_reason
from distillery_assets.llm.types import ChatMessage

_MODELS: dict[tuple[str, int, int, int], Any] = {}
_MODEL_LOCKS: dict[tuple[str, int, int, int], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


CUT_REPLIES_KEPT = 256
"""Cut-off replies a provider remembers for their continuation (the client asks again right after the cut)."""


class _Continuing:
    """Stands in for the ``Llama`` passed to llama-cpp-python's chat handler: the handler formats and tokenizes
    the messages exactly as for a fresh ask, and its ``create_completion`` gets ``tail`` (the cut-off reply's
    tokens) appended to the prompt and the budget reduced by them."""

    def __init__(self, llm, tail: list[int]):
        self._llm, self._tail = llm, tail

    def __getattr__(self, name):
        return getattr(self._llm, name)

    def create_completion(self, prompt, **kwargs):
        kwargs["max_tokens"] = max(1, int(kwargs["max_tokens"]) - len(self._tail))
        return self._llm.create_completion(prompt=list(prompt) + self._tail, **kwargs)


def _chat_handler(llm):
    """The chat handler ``Llama.create_chat_completion`` would use (same lookup order as llama-cpp-python)."""
    from llama_cpp import llama_chat_format

    return (llm.chat_handler or llm._chat_handlers.get(llm.chat_format)
            or llama_chat_format.get_chat_completion_handler(llm.chat_format))


def _load_model(path: str, n_ctx: int, n_threads: int, n_threads_batch: int):
    """Load a GGUF file with llama-cpp-python (the expensive step a cache hit must never reach)."""
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads_batch, verbose=False)


def request_seed(model: str, messages: list[dict[str, str]], temperature: float, stop: list[str] | None,
                 json_schema: dict[str, Any] | None) -> int:
    """The sampling seed of a request that names none: the same for the same request in every process and
    whatever was asked before it; the budget is left out, so a larger budget starts with the same tokens."""
    from distillery_assets.io.hashing import derived_seed

    return derived_seed("local-request", json.dumps([model, messages, round(float(temperature), 6),
                                                     list(stop or []), json_schema], sort_keys=True))


class LocalProvider:
    name = "local"

    def __init__(self, gguf_path: str | Path | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 n_threads_batch: int | None = None, continue_cut: bool = True):
        from distillery_assets.threads import llama_threads, spare_cores

        self._path = Path(gguf_path) if gguf_path else None
        self.n_ctx = int(n_ctx)
        threads = llama_threads(n_threads, n_threads_batch)
        self.n_threads, self.n_threads_batch = threads["n_threads"], threads["n_threads_batch"]
        # prompt threads per request: the policy's, plus a core nobody else is using (fixed when given here)
        self.spare = spare_cores(n_threads or n_threads_batch)
        self._paths: dict[str, Path] = {}
        self._cut: OrderedDict[str, tuple[str, int]] = OrderedDict()  # request -> (reply so far, its tokens)
        self._cut_lock = threading.Lock()
        self.continued_tokens = 0  # tokens a continuation did not decode again (what a fresh re-ask would have)
        self.continue_cut = continue_cut  # False: a larger budget asks afresh (benchmarks/llm_waste.py's "old")

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
        if seed is None:
            seed = request_seed(model, kwargs["messages"], temperature, stop, json_schema)
        kwargs["seed"] = seed
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        continuable = self.continue_cut and json_schema is None and all(callable(getattr(llm, name, None))
                                                  for name in ("tokenize", "create_completion"))
        key = None if not continuable else json.dumps(
            [model, kwargs["messages"], temperature, list(stop or []), seed], sort_keys=True)
        with self._cut_lock:
            cut = self._cut.pop(key, None) if key else None
        prefix, prefix_tokens = ("", 0) if cut is None or cut[1] >= max_tokens else cut
        try:
            with lock:
                if not self.spare.fixed:
                    from distillery_assets.threads import set_llama_threads

                    set_llama_threads(llm, self.spare.check()[0])
                if prefix:
                    tail = llm.tokenize(prefix.encode("utf-8"), add_bos=False, special=False)
                    out = _chat_handler(llm)(llama=_Continuing(llm, tail), **kwargs)
                else:
                    out = llm.create_chat_completion(**kwargs)
        except ValueError as exc:  # e.g. prompt longer than n_ctx
            raise ProviderError(f"llama.cpp rejected the request: {exc}") from exc
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        message = choice.get("message") or {}
        text = prefix + (message.get("content") or "")
        reason = finish_reason(choice.get("finish_reason"),
                               tool_call=bool(message.get("tool_calls") or message.get("function_call")))
        generated = int(usage.get("completion_tokens") or 0)
        if prefix:
            self.continued_tokens += prefix_tokens
            for s in stop or []:  # a stop string that begins in the earlier part and ends in the new one
                at = text.find(s, max(0, len(prefix) - len(s) + 1))
                if at >= 0:
                    text, reason = text[:at], "stop"
        if key and reason == "length":
            with self._cut_lock:
                self._cut[key] = (text, prefix_tokens + generated)
                while len(self._cut) > CUT_REPLIES_KEPT:
                    self._cut.popitem(last=False)
        return ProviderReply(
            text=text,
            finish_reason=reason,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=generated,
            cost_usd=0.0,
        )
