"""LLMClient: the one entry point that hides cache, rate limits, retries and JSON checking from callers.

Per request: resolve the model -> request key -> cache hit? (answer without touching the provider) ->
rate limiter -> provider call with retries (tenacity: exponential backoff + jitter, Retry-After honoured)
-> JSON parse + schema validation with a bounded re-ask -> cache the success -> one usage row.
Every request ends as ``ok=True`` or ``ok=False`` with a reason; ``complete_batch`` keeps input order and
never raises for one bad item. Identical requests in flight at once are made only once (the second waits
and is served from the cache). Errors, logs and rows pass through the secret scrubber.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from distillery_assets.llm.cache import ResponseCache
from distillery_assets.llm.errors import ConfigError, ProviderError, RetryableError
from distillery_assets.llm.jsonout import JSONReplyError, check_schema, parse_json_reply
from distillery_assets.llm.limits import RateLimiter, estimate_tokens
from distillery_assets.llm.pricing import estimate_cost
from distillery_assets.llm.progress import ProgressCallback, ProgressTracker
from distillery_assets.llm.providers.base import Provider, ProviderReply
from distillery_assets.llm.scrub import Scrubber
from distillery_assets.llm.types import ChatMessage, LLMRequest, LLMResult, Usage

UsageSink = Callable[[list[dict[str, Any]]], None]
RAW_IN_ERROR_CHARS = 600
REASK_TEXT = ("Your previous reply could not be used: {reason}. Reply again with exactly one JSON object that "
              "satisfies the requested schema, and no other text.")

log = logging.getLogger(__name__)


class _Outcome:
    """What one request produced, before it becomes an LLMResult + usage row."""

    def __init__(self):
        self.text: str | None = None
        self.parsed: dict | None = None
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.reported_cost: float | None = None
        self.all_costs_reported = True


class LLMClient:
    def __init__(self, provider: Provider, *, cache_dir: Path | None, concurrency: int = 4,
                 rpm: int | None = None, tpm: int | None = None, timeout_s: float = 120.0,
                 max_attempts: int = 5, backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0,
                 max_retry_after_s: float = 300.0, json_reasks: int = 2,
                 usage_sink: UsageSink | None = None, progress: ProgressCallback | None = None,
                 run_id: str | None = None, scrubber: Scrubber | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | Any | None = None):
        self.provider = provider
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.concurrency = max(1, int(concurrency))
        self.limiter = RateLimiter(rpm, tpm, clock=clock, sleep=sleep)
        self.timeout_s = float(timeout_s)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.json_reasks = max(0, int(json_reasks))
        self.usage_sink, self.progress, self.run_id = usage_sink, progress, run_id
        self.scrub = scrubber or Scrubber()
        self._sleep, self._clock = sleep, clock
        self.log = logger or log
        self._inflight: dict[str, list] = {}
        self._inflight_guard = threading.Lock()
        self._rows_lock = threading.Lock()
        self.unsaved_rows: list[dict[str, Any]] = []
        self.provider_calls = 0  # attempts that reached the provider (for tests and metadata)

    # ------------------------------------------------------------------ public API
    def complete(self, request: LLMRequest) -> LLMResult:
        try:
            result, row = self._run(request)
        except Exception as exc:  # never raise for one request: it ends rejected, with the reason
            result, row = self._unexpected(request, exc)
        self._flush([row])
        return result

    def complete_batch(self, requests: Sequence[LLMRequest], label: str | None = None,
                       flush_every: int = 50, flush_every_s: float = 10.0) -> list[LLMResult]:
        requests = list(requests)
        label = label or (requests[0].tag if requests else "batch")
        tracker = ProgressTracker(label, len(requests), self.progress, clock=self._clock)
        results: list[LLMResult | None] = [None] * len(requests)
        pending_rows: list[dict[str, Any]] = []
        last_flush = [self._clock()]
        rows_guard = threading.Lock()

        def one(index: int) -> None:
            try:
                result, row = self._run(requests[index])
            except Exception as exc:  # a bug or an unexpected SDK error must not lose the item
                result, row = self._unexpected(requests[index], exc)
            results[index] = result
            tracker.record(result.ok, result.cached)
            with rows_guard:
                pending_rows.append(row)
                due = len(pending_rows) >= flush_every or self._clock() - last_flush[0] >= flush_every_s
                batch = pending_rows[:] if due else []
                if due:
                    pending_rows.clear()
                    last_flush[0] = self._clock()
            if batch:
                self._flush(batch)

        if requests:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)),
                                    thread_name_prefix="llm") as pool:
                pending = {pool.submit(one, i) for i in range(len(requests))}
                while pending:  # a slow batch still reports at least every `every_s` seconds
                    _, pending = wait(pending, timeout=tracker.every_s)
                    if pending:
                        tracker.heartbeat()
        self._flush(pending_rows)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # cannot happen unless the pool itself broke; never hand back a short list
            raise RuntimeError(f"{label}: no result for request(s) {missing}")
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ one request
    def _run(self, request: LLMRequest) -> tuple[LLMResult, dict[str, Any]]:
        started = self._clock()
        provider = self.provider.name
        try:
            model = self.provider.model_id(request.model)
        except Exception as exc:
            model = request.model or "?"
            out = _Outcome()
            out.error = f"configuration: {exc}"
            return self._finish(request, provider, model, request.key(provider, model), out, started, cached=False)
        key = request.key(provider, model)
        with self._key_lock(key):
            entry = self.cache.get(key) if self.cache else None
            if entry is not None:
                out = _Outcome()
                out.text, out.parsed, out.finish_reason = entry.get("text"), entry.get("parsed"), entry.get("finish_reason")
                out.input_tokens, out.output_tokens = entry.get("input_tokens", 0), entry.get("output_tokens", 0)
                return self._finish(request, provider, model, key, out, started, cached=True)
            out = self._ask(request, model)
            if out.error is None and self.cache is not None:
                self.cache.put(key, {
                    "request_key": key, "provider": provider, "model": model, "tag": request.tag,
                    "text": out.text, "parsed": out.parsed, "finish_reason": out.finish_reason,
                    "input_tokens": out.input_tokens, "output_tokens": out.output_tokens,
                    "created_at": _now(),
                })
        return self._finish(request, provider, model, key, out, started, cached=False)

    def _ask(self, request: LLMRequest, model: str) -> _Outcome:
        out = _Outcome()
        messages = list(request.messages)
        schema = request.json_schema
        if schema is not None:
            try:
                check_schema(schema)
            except jsonschema.SchemaError as exc:
                out.error = f"invalid json_schema in the request: {exc.message}"
                return out
        for _ask_number in range(1 + (self.json_reasks if schema is not None else 0)):
            try:
                reply = self._call_with_retries(messages, request, model)
            except RetryableError as exc:
                out.error = f"gave up after {self.max_attempts} attempts: {exc}"
                return out
            except ProviderError as exc:
                out.error = f"provider error: {exc}"
                return out
            except ConfigError as exc:
                out.error = f"configuration: {exc}"
                return out
            out.input_tokens += reply.input_tokens
            out.output_tokens += reply.output_tokens
            if reply.cost_usd is None:
                out.all_costs_reported = False
            else:
                out.reported_cost = (out.reported_cost or 0.0) + reply.cost_usd
            out.text, out.finish_reason = reply.text, reply.finish_reason
            if schema is None:
                return out
            if reply.finish_reason == "length":
                out.error = (f"finish_reason=length: the JSON reply was cut off at max_tokens={request.max_tokens}; "
                             f"raw reply: {reply.text[:RAW_IN_ERROR_CHARS]!r}")
                return out
            try:
                out.parsed = parse_json_reply(reply.text, schema)
                return out
            except JSONReplyError as exc:
                reason = exc.reason
                messages = messages + [ChatMessage(role="assistant", content=reply.text),
                                       ChatMessage(role="user", content=REASK_TEXT.format(reason=reason))]
        out.error = (f"invalid JSON after {1 + self.json_reasks} attempts: {reason}; "
                     f"raw reply: {out.text[:RAW_IN_ERROR_CHARS]!r}")
        return out

    def _call_with_retries(self, messages: list[ChatMessage], request: LLMRequest, model: str) -> ProviderReply:
        estimate = sum(estimate_tokens(m.content) for m in messages) + request.max_tokens
        retrying = Retrying(stop=stop_after_attempt(self.max_attempts), wait=self._wait,
                            retry=retry_if_exception_type(RetryableError), sleep=self._sleep,
                            before_sleep=self._log_retry, reraise=True)
        for attempt in retrying:
            with attempt:
                ticket = self.limiter.acquire(estimate)
                self.provider_calls += 1
                reply = self.provider.call(messages, model=model, temperature=request.temperature,
                                           max_tokens=request.max_tokens, json_schema=request.json_schema,
                                           stop=request.stop, seed=request.seed, timeout_s=self.timeout_s)
                self.limiter.settle(ticket, reply.input_tokens + reply.output_tokens)
        return reply

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            retry_after = min(float(retry_after), self.max_retry_after_s)
            return retry_after + random.uniform(0, 0.1 * retry_after)
        return wait_exponential_jitter(initial=self.backoff_initial_s, max=self.backoff_max_s,
                                       jitter=self.backoff_initial_s)(state)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(self.scrub(f"LLM {self.provider.name}: {exc}; retry {state.attempt_number}/"
                                    f"{self.max_attempts - 1} in {wait:.1f}s"))

    # ------------------------------------------------------------------ results, rows, sink
    def _finish(self, request: LLMRequest, provider: str, model: str, key: str, out: _Outcome,
                started: float, cached: bool) -> tuple[LLMResult, dict[str, Any]]:
        latency = max(self._clock() - started, 0.0)
        if cached:
            cost = 0.0
        elif out.all_costs_reported and out.reported_cost is not None:
            cost = out.reported_cost
        else:
            cost = estimate_cost(provider, model, out.input_tokens, out.output_tokens)
        error = self.scrub(out.error)
        result = LLMResult(ok=error is None, text=out.text, parsed=out.parsed, error=error,
                           finish_reason=out.finish_reason, cached=cached, provider=provider, model=model,
                           request_key=key, usage=Usage(input_tokens=out.input_tokens, output_tokens=out.output_tokens,
                                                        latency_s=round(latency, 4), cost_usd=cost))
        row = {
            "request_key": key, "provider": provider, "model": model, "tag": request.tag, "ok": result.ok,
            "error": error, "finish_reason": out.finish_reason, "input_tokens": out.input_tokens,
            "output_tokens": out.output_tokens, "latency_s": round(latency, 4), "cost_usd": cost,
            "cached": cached, "created_at": _now(), "run_id": self.run_id,
        }
        if error:
            self.log.warning(f"LLM request {key[:12]} ({request.tag}) rejected: {error[:300]}")
        return result, row

    def _unexpected(self, request: LLMRequest, exc: Exception) -> tuple[LLMResult, dict[str, Any]]:
        out = _Outcome()
        out.error = f"unexpected {type(exc).__name__}: {exc}"
        model = request.model or "?"
        return self._finish(request, self.provider.name, model, request.key(self.provider.name, model), out,
                            self._clock(), cached=False)

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        if self.usage_sink is None:
            return
        with self._rows_lock:
            batch = self.unsaved_rows + list(rows)
            self.unsaved_rows = []
            if not batch:
                return
            try:
                self.usage_sink(batch)
            except Exception as exc:
                self.unsaved_rows = batch
                self.log.warning(self.scrub(f"could not record {len(batch)} LLM usage row(s) yet: {exc}; "
                                            "they are kept and retried with the next ones"))

    def _key_lock(self, key: str):
        client = self

        class _Hold:
            def __enter__(self_inner):
                with client._inflight_guard:
                    entry = client._inflight.setdefault(key, [threading.Lock(), 0])
                    entry[1] += 1
                self_inner.entry = entry
                entry[0].acquire()

            def __exit__(self_inner, *exc_info):
                self_inner.entry[0].release()
                with client._inflight_guard:
                    self_inner.entry[1] -= 1
                    if self_inner.entry[1] == 0:
                        client._inflight.pop(key, None)

        return _Hold()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
