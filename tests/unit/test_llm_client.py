"""LLMClient behaviour against an in-test provider double (no HTTP): retries, JSON, cache, batches, rows."""

import logging

import pytest

from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest
from distillery_assets.llm.providers.base import ProviderReply
from distillery_assets.llm.errors import ProviderError, RetryableError
from distillery_assets.llm.providers.scripted import ScriptedProvider
from tests.support.llm import answers

SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
          "required": ["title", "score"], "additionalProperties": False}


def ask(text="hello", **kw):
    return LLMRequest(messages=[ChatMessage(role="user", content=text)], **kw)


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def make(provider, tmp_path, **kw):
    kw.setdefault("sleep", Sleeps())
    return LLMClient(provider, cache_dir=tmp_path / "cache", backoff_initial_s=0.5, **kw)


def test_retries_honour_retry_after_then_succeed(tmp_path):
    provider = ScriptedProvider([RetryableError("HTTP 429", retry_after=7.0), RetryableError("HTTP 503"), "fine"])
    sleeps = Sleeps()
    client = make(provider, tmp_path, sleep=sleeps)
    result = client.complete(ask())
    assert result.ok and result.text == "fine"
    assert len(provider.calls) == 3
    assert 7.0 <= sleeps[0] <= 7.7          # Retry-After honoured (plus at most 10% jitter)
    assert 0.5 <= sleeps[1] <= 1.5 + 0.5    # exponential backoff with jitter for the 503


def test_backoff_grows_and_gives_up_with_the_reason(tmp_path):
    provider = ScriptedProvider([RetryableError("HTTP 500: boom")] * 10)
    sleeps = Sleeps()
    client = make(provider, tmp_path, sleep=sleeps, max_attempts=4)
    result = client.complete(ask())
    assert not result.ok and "gave up after 4 attempts" in result.error and "HTTP 500: boom" in result.error
    assert len(provider.calls) == 4 and len(sleeps) == 3
    # jittered exponential: the third wait's floor (0.5*4) is above the first wait's ceiling (0.5+0.5)
    assert sleeps[2] > sleeps[0]


def test_non_retryable_error_fails_at_once(tmp_path):
    provider = ScriptedProvider([ProviderError("HTTP 401: bad key")])
    result = make(provider, tmp_path).complete(ask())
    assert not result.ok and result.error == "provider error: HTTP 401: bad key"
    assert len(provider.calls) == 1


def test_invalid_json_is_reasked_with_the_raw_reply_and_reason(tmp_path):
    provider = ScriptedProvider(['Sure! {"title": "x"', '```json\n{"title": "T", "score": 3}\n```'])
    result = make(provider, tmp_path).complete(ask(json_schema=SCHEMA))
    assert result.ok and result.parsed == {"title": "T", "score": 3}
    second = provider.calls[1]
    assert second[-2].role == "assistant" and second[-2].content == 'Sure! {"title": "x"'
    assert second[-1].role == "user" and "not valid JSON" in second[-1].content
    assert result.usage.input_tokens == 20 and result.usage.output_tokens == 10  # both asks counted


def test_reask_is_bounded_and_keeps_the_raw_text(tmp_path):
    provider = ScriptedProvider(['{"title": "T", "score": "high"}'] * 5)
    result = make(provider, tmp_path, json_reasks=2).complete(ask(json_schema=SCHEMA))
    assert not result.ok
    assert len(provider.calls) == 3
    assert "invalid JSON after 3 attempts" in result.error and "score" in result.error
    assert '"high"' in result.error  # raw reply kept
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.json"))


def test_length_truncation_rejects_json_without_reask_and_text_too_unless_accepted(tmp_path):
    cut = ProviderReply(text='{"title": "T", "sco', finish_reason="length", input_tokens=4, output_tokens=16)
    provider = ScriptedProvider([cut])
    result = make(provider, tmp_path, length_retries=0).complete(ask(json_schema=SCHEMA, max_tokens=16))
    assert not result.ok and "finish_reason=length" in result.error and '"sco' in result.error
    assert len(provider.calls) == 1
    text_cut = ProviderReply(text="a story that stops mid", finish_reason="length", input_tokens=4, output_tokens=5)
    result = make(ScriptedProvider([text_cut]), tmp_path, length_retries=0).complete(ask("story", max_tokens=5))
    assert not result.ok and result.finish_reason == "length" and "cut off at max_tokens=5" in result.error
    accepted = make(ScriptedProvider([text_cut]), tmp_path, length_retries=0).complete(
        ask("story", max_tokens=5, accept_truncated=True))
    assert accepted.ok and accepted.finish_reason == "length"  # the caller said a cut-off text will do
    grown = ScriptedProvider([text_cut])
    result = make(grown, tmp_path).complete(ask("story two", max_tokens=5))  # default: one more, larger ask
    assert result.ok and result.finish_reason == "stop" and len(grown.calls) == 2 and result.attempts == 2


def test_a_cached_cut_off_answer_is_not_served_as_a_result(tmp_path):
    from distillery_assets.llm.cache import ResponseCache

    request = ask("story", max_tokens=5)
    provider = ScriptedProvider(["the whole story"])
    client = make(provider, tmp_path)
    key = request.key(provider.name, provider.model_id(None))
    ResponseCache(tmp_path / "cache").put(key, {"text": "the sto", "finish_reason": "length"})
    result = client.complete(request)
    assert result.ok and not result.cached and result.text == "the whole story" and len(provider.calls) == 1


def test_invalid_schema_in_request_is_rejected_before_any_call(tmp_path):
    provider = ScriptedProvider()
    result = make(provider, tmp_path).complete(ask(json_schema={"type": "no-such-type"}))
    assert not result.ok and "invalid json_schema" in result.error and provider.calls == []


def test_cache_hit_skips_the_provider_and_failures_are_not_cached(tmp_path):
    provider = ScriptedProvider([ProviderError("HTTP 400"), "first answer"])
    rows = []
    client = make(provider, tmp_path, usage_sink=rows.extend)
    assert not client.complete(ask()).ok
    first = client.complete(ask())
    again = make(ScriptedProvider([AssertionError("must not be called")]), tmp_path, usage_sink=rows.extend)
    hit = again.complete(ask())
    assert first.ok and not first.cached and hit.cached and hit.text == "first answer"
    assert hit.request_key == first.request_key
    assert [r["cached"] for r in rows] == [False, False, True]
    assert rows[2]["input_tokens"] == 10 and rows[2]["cost_usd"] == 0.0


def test_batch_keeps_order_and_every_item_ends_ok_or_rejected_once(tmp_path):
    def default(messages, **settings):
        n = int(messages[-1].content.split()[-1])
        if n % 7 == 0:
            raise ProviderError(f"refused {n}")
        if n % 11 == 0:
            raise RuntimeError(f"sdk bug {n}")  # not a ProviderError: must still become a rejection
        return f"answer {n}"

    provider = ScriptedProvider(default=default)
    rows, lines = [], []
    client = make(provider, tmp_path, usage_sink=rows.extend, progress=lines.append, concurrency=8)
    requests = [ask(f"item {i}", tag="t") for i in range(60)] + [ask("item 1", tag="t")]  # one duplicate
    results = answers(client, requests, label="demo/batch", flush_every=7)
    assert len(results) == 61
    for i, result in enumerate(results[:60]):
        if i % 7 == 0 or i % 11 == 0:
            assert not result.ok and str(i) in result.error
        else:
            assert result.ok and result.text == f"answer {i}"
    assert results[60].ok and results[60].text == "answer 1" and results[60].cached
    assert len(rows) == 61 and sorted(r["request_key"] for r in rows) == sorted(r.request_key for r in results)
    assert len(provider.calls) == 60  # the duplicate was served from the cache, not paid twice
    assert lines[-1].done == 61 and lines[-1].failed == sum(not r.ok for r in results)
    assert lines[-1].line().startswith("demo/batch: 61/61 done (1 cached, ")
    assert len(lines) >= 10  # at least every 10%


def test_usage_rows_have_the_catalogue_columns(tmp_path):
    rows = []
    client = make(ScriptedProvider(), tmp_path, usage_sink=rows.extend, run_id="run-1")
    client.complete(ask(tag="story_corpus"))
    assert set(rows[0]) == {"request_key", "provider", "model", "tag", "ok", "error", "finish_reason",
                            "input_tokens", "output_tokens", "latency_s", "cost_usd", "cached", "created_at",
                            "run_id", "attempts"}
    assert rows[0]["tag"] == "story_corpus" and rows[0]["run_id"] == "run-1" and rows[0]["latency_s"] >= 0
    assert rows[0]["attempts"] == 1


class FakeClock:
    """Time that moves only when the client sleeps or the provider works."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_latency_counts_provider_attempts_only_and_rows_count_attempts(tmp_path):
    clock = FakeClock()

    class SlowProvider(ScriptedProvider):
        def call(self, messages, **kw):
            clock.now += 2.0  # each attempt takes 2 s at the provider
            return super().call(messages, **kw)

    rows = []
    provider = SlowProvider([RetryableError("HTTP 429", retry_after=7.0), "fine"])
    client = LLMClient(provider, cache_dir=tmp_path / "cache", clock=clock, sleep=clock.sleep,
                       usage_sink=rows.extend)
    result = client.complete(ask())
    assert result.ok and result.attempts == 2 and clock.now >= 11.0  # 2 + 7 s back-off (+jitter) + 2
    assert result.usage.latency_s == pytest.approx(4.0)  # the 7 s back-off is not latency
    assert rows[0]["latency_s"] == pytest.approx(4.0) and rows[0]["attempts"] == 2
    again = client.complete(ask())
    assert again.cached and again.usage.latency_s == 0.0 and rows[1]["attempts"] == 0


def test_a_failing_sink_keeps_rows_until_it_works(tmp_path, caplog):
    saved, broken = [], [True]

    def sink(rows):
        if broken[0]:
            raise OSError("catalogue locked")
        saved.extend(rows)

    client = make(ScriptedProvider(), tmp_path, usage_sink=sink)
    with caplog.at_level(logging.WARNING):
        client.complete(ask("a"))
    assert saved == [] and len(client.unsaved_rows) == 1 and "catalogue locked" in caplog.text
    broken[0] = False
    client.complete(ask("b"))
    assert len(saved) == 2 and client.unsaved_rows == []


def test_configuration_error_is_a_rejection_not_a_crash(tmp_path):
    class Broken(ScriptedProvider):
        def model_id(self, model):
            raise FileNotFoundError("no GGUF at /x")

    result = make(Broken(), tmp_path).complete(ask())
    assert not result.ok and "no GGUF at /x" in result.error


@pytest.mark.parametrize("concurrency", [1, 4])
def test_batch_of_nothing(tmp_path, concurrency):
    seen = []
    make(ScriptedProvider(), tmp_path, concurrency=concurrency).each([], lambda i, r: seen.append(i))
    assert seen == []


def test_progress_fires_every_tenth_and_on_heartbeat():
    from distillery_assets.llm.progress import ProgressTracker

    now = [0.0]
    seen = []
    tracker = ProgressTracker("corpus/x", 40, seen.append, clock=lambda: now[0])
    for _ in range(8):
        tracker.record(ok=True, cached=False)
    assert [p.done for p in seen] == [4, 8]  # every 10% of 40
    now[0] = 5.0
    tracker.heartbeat()
    assert len(seen) == 2  # not yet 10 s since the last line
    now[0] = 16.0
    tracker.heartbeat()
    assert seen[-1].done == 8 and seen[-1].rate == 0.5
    assert seen[-1].line() == "corpus/x: 8/40 done (0 cached, 0 failed) 0.5 req/s"
    tracker.record(ok=False, cached=True)  # 9/40: neither a new tenth nor 10 s since the last line
    assert len(seen) == 3
    now[0] = 27.0
    tracker.record(ok=True, cached=False)  # 10/40, 11 s after the last line
    assert seen[-1].done == 10 and (seen[-1].failed, seen[-1].cached) == (1, 1)


def test_rpm_limit_spaces_provider_calls(tmp_path):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    provider = ScriptedProvider()
    stamps = []
    original = provider.call
    provider.call = lambda *a, **k: stamps.append(now[0]) or original(*a, **k)
    client = LLMClient(provider, cache_dir=None, rpm=2, clock=lambda: now[0], sleep=sleep, concurrency=1)
    results = answers(client, [ask(f"q{i}") for i in range(5)])
    assert all(r.ok for r in results)
    assert stamps == [0.0, 0.0, 60.0, 60.0, 120.0]


def test_each_runs_the_consumer_as_answers_arrive_and_its_exception_stops_the_batch(tmp_path):
    seen = []
    client = make(ScriptedProvider(), tmp_path, concurrency=2)
    client.each([ask(f"q{i}") for i in range(6)], lambda i, r: seen.append((i, r.text)), label="each")
    assert sorted(seen) == [(i, f"echo: q{i}") for i in range(6)]

    def stop_at_third(index, result):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # a kill inside the consumer reaches the caller, not the loop
        calls.append(index)

    calls = []
    with pytest.raises(KeyboardInterrupt):
        make(ScriptedProvider(), tmp_path / "b", concurrency=1).each([ask(f"x{i}") for i in range(20)], stop_at_third)
    assert len(calls) == 2
    assert client.complete(ask("after")).ok  # the shared event loop survived
