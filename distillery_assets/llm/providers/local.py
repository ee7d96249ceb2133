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
depend on the budget, with the same sampling settings (the continuation goes through
``Llama.create_chat_completion`` itself, with a stand-in for the model, ``_Asking``, whose ``create_completion``
adds the reply so far; the chat handler called directly would sample with its own ``repeat_penalty=1.1``
instead of the plain ask's 1.0, as the first version of the continuation did). Greedy, the continued reply is
the one-go reply token for token (``tests/unit/test_loop_stop.py``). Each call reports as output tokens the
tokens it decoded, so the client's sums count every generated token once. JSON requests (a grammar whose state
a continuation would have to rebuild) are asked afresh. ``benchmarks/llm_waste.py`` counts decoded against kept
tokens each way.

A reply caught in a repetition loop is stopped as soon as the loop is plain, not when it reaches ``max_tokens``:
a small model that starts repeating a line or a phrase nearly always goes on until the budget (and, cut off,
the client's larger budget) is spent, and the reply is a failure either way. After each decoded token
(llama-cpp-python's ``stopping_criteria``) :func:`repetition_loop` looks at the reply's own tokens -- never the
prompt's; a continued reply's earlier part included, so a loop that began before a cut is caught right after
the continuation starts -- and when the reply ends in a span of 1 to ``LOOP_MAX_SPAN`` tokens repeated at
least ``LOOP_MIN_REPEATS`` times in a row, covering at least ``LOOP_MIN_TOKENS`` tokens, generation stops and
the reply's finish reason is ``repetition``: a named failure the client does not ask again (no larger budget)
and never caches; its usage counts every token decoded. A refrain (a line that comes back between other
lines) or a short repeated phrase is not a loop. The thresholds come from the main job's own requests: on 120
replies of its verse briefs, briefs, critiques and lessons (two samplings), the loosest setting that cut none
of the 54 replies that stopped by themselves; a looser one (2 repeats, or 24-32 tokens) cut one to four of
them. It stops a third to a half of the teaching replies (briefs, critiques, lessons) that never stop, but only
one in twenty to one in four of the verse briefs' (those mostly ramble on, or vary the line they repeat).
``benchmarks/llm_waste.py`` measures it against the continuation alone, with the replies that stopped by
themselves there and that it cut. ``LocalProvider(stop_loops=False)`` (setting ``stop_loops``,
``DISTILLERY_LLM_STOP_LOOPS=0``) turns it off. JSON requests are watched the same way.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
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


LOOP_MAX_SPAN = 64
"""Longest span (tokens) :func:`repetition_loop` looks for: a few lines of verse or prose."""
LOOP_MIN_REPEATS = 3
"""A span must come this many times in a row to be a loop."""
LOOP_MIN_TOKENS = 40
"""... and the repeats must cover at least this many tokens (a short span needs more repeats)."""
REPETITION = "repetition"
"""The finish reason of a reply stopped in a repetition loop (``distillery_assets.llm.providers.base``)."""


def repetition_loop(tokens: Sequence[int], *, max_span: int = LOOP_MAX_SPAN, min_repeats: int = LOOP_MIN_REPEATS,
                    min_tokens: int = LOOP_MIN_TOKENS) -> int:
    """The length ``k`` of the span ``tokens`` ends by repeating, or 0: the smallest ``k`` (1 to ``max_span``)
    such that the last ``k`` tokens come at least ``max(min_repeats, ceil(min_tokens / k))`` times in a row at
    the end, identically. A line that returns after other lines (a refrain) is not a repeat in a row."""
    tokens = list(tokens)
    n = len(tokens)
    for k in range(1, max_span + 1):
        repeats = max(min_repeats, -(-min_tokens // k))
        if repeats * k > n:
            continue
        if tokens[-1] == tokens[-1 - k] and tokens[n - repeats * k:] == tokens[n - k:] * repeats:
            return k
    return 0


class _Asking:
    """Stands in for the ``Llama`` that ``Llama.create_chat_completion`` passes to its chat handler (so the
    messages are formatted and tokenized, and sampled with the same settings, exactly as for a plain ask); its
    ``create_completion`` appends ``tail`` (the tokens of the cut-off reply being continued) to the prompt and
    takes them off the budget, and with ``stop_loops`` adds a stopping criterion that ends the reply when its
    tokens (``tail`` and the new ones) end in a :func:`repetition_loop`; ``looped`` then says so."""

    def __init__(self, llm, tail: list[int], stop_loops: bool):
        self._llm, self._tail, self._stop_loops = llm, tail, stop_loops
        self.looped = False

    def __getattr__(self, name):
        return getattr(self._llm, name)

    def create_completion(self, prompt, **kwargs):
        prompt = list(prompt)
        start = len(prompt)  # the reply's first token (the tail's, when continuing)
        if self._tail:
            kwargs["max_tokens"] = max(1, int(kwargs["max_tokens"]) - len(self._tail))
        if self._stop_loops:
            from llama_cpp import StoppingCriteriaList

            window = max(LOOP_MAX_SPAN * LOOP_MIN_REPEATS, LOOP_MIN_TOKENS)

            def looping(input_ids, logits) -> bool:  # called before each new token (and once at the end)
                if not self.looped:
                    self.looped = bool(repetition_loop(input_ids[max(start, len(input_ids) - window):].tolist()))
                return self.looped  # once stopped, llama-cpp-python asks again after the loop: still True

            kwargs["stopping_criteria"] = StoppingCriteriaList([*(kwargs.get("stopping_criteria") or []), looping])
        return self._llm.create_completion(prompt=prompt + self._tail, **kwargs)


def _load_model(path: str, n_ctx: int, n_threads: int, n_threads_batch: int):
    """Load a GGUF file with llama-cpp-python (the expensive step a cache hit must never reach)."""
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads_batch, verbose=False)


class LocalProvider:
    name = "local"

    def __init__(self, gguf_path: str | Path | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 n_threads_batch: int | None = None, continue_cut: bool = True, stop_loops: bool = True):
        from distillery_assets.threads import llama_threads

        self._path = Path(gguf_path) if gguf_path else None
        self.n_ctx = int(n_ctx)
        threads = llama_threads(n_threads, n_threads_batch)
        self.n_threads, self.n_threads_batch = threads["n_threads"], threads["n_threads_batch"]
        self._paths: dict[str, Path] = {}
        self._cut: OrderedDict[str, tuple[str, int]] = OrderedDict()  # request -> (reply so far, its tokens)
        self._cut_lock = threading.Lock()
        self.continued_tokens = 0  # tokens a continuation did not decode again (what a fresh re-ask would have)
        self.continue_cut = continue_cut  # False: a larger budget asks afresh (benchmarks/llm_waste.py's "old")
        self.stop_loops = stop_loops  # False: a repetition loop runs on to max_tokens (see the module docstring)

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
        continuable = self.continue_cut and json_schema is None and callable(getattr(llm, "tokenize", None))
        key = None if not continuable else json.dumps(
            [model, kwargs["messages"], temperature, list(stop or []), seed], sort_keys=True)
        with self._cut_lock:
            cut = self._cut.pop(key, None) if key else None
        prefix, prefix_tokens = ("", 0) if cut is None or cut[1] >= max_tokens else cut
        asking = None
        try:
            with lock:
                tail = llm.tokenize(prefix.encode("utf-8"), add_bos=False, special=False) if prefix else []
                if tail or self.stop_loops:
                    asking = _Asking(llm, tail, self.stop_loops)
                    out = type(llm).create_chat_completion(asking, **kwargs)  # the chat handler gets the stand-in
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
        if asking is not None and asking.looped:
            reason = REPETITION
        if prefix:
            self.continued_tokens += prefix_tokens
            for s in stop or []:  # a stop string that begins in the earlier part and ends in the new one
                at = text.find(s, max(0, len(prefix) - len(s) + 1))
                if at >= 0:  # it ended there, before any loop the new part ran into
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
