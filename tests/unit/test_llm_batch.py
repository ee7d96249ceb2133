"""Batch mode (``distillery_assets.llm.batch``) through the official SDKs against the loopback fakes of the
Anthropic Message Batches API and the OpenAI Batch API: every request sent once, answers through the same path
as online ones (finish reasons, JSON checks and re-asks, cache, usage rows at the batch price), failed items
named and asked again, a batch left open by a run resumed by the next, limits split into several batches."""

import json
import logging
import threading

import pytest

from distillery_assets.llm import ChatMessage, ConfigError, LLMRequest, LLMSettings, build_client
from distillery_assets.llm.batch import BatchLedger, call_id
from distillery_assets.llm.pricing import estimate_cost
from distillery_assets.llm.providers.batches import AnthropicBatchAPI, OpenAIBatchAPI
from distillery_assets.llm.task import LLMTask, TaskJournal, run_task
from tests.support.fakeapi import serve_anthropic, serve_openai_compat
from tests.support.fakeapi.replies import fail_first

PROVIDERS = [pytest.param("anthropic", serve_anthropic, id="anthropic"),
             pytest.param("openai", serve_openai_compat, id="openai")]
MODEL = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-5.4-mini"}
log = logging.getLogger("test_llm_batch")


class Docs(LLMTask[str]):
    name = "docs"
    ordered = False

    def __init__(self, max_tokens: int = 64):
        self.max_tokens = max_tokens

    def prompt(self, row: str) -> LLMRequest:
        return LLMRequest(messages=[ChatMessage(role="system", content="You write short documents."),
                                    ChatMessage(role="user", content=f"Write document {row}.")],
                          max_tokens=self.max_tokens)


class Verdicts(LLMTask[str]):
    name = "verdicts"
    ordered = False

    def prompt(self, row: str) -> LLMRequest:
        return LLMRequest(messages=[ChatMessage(role="user", content=f"Judge {row}.")], max_tokens=64,
                          json_schema={"type": "object", "properties": {"score": {"type": "integer"}},
                                       "required": ["score"]})

    def parse(self, row, result):
        return result.parsed


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("DISTILLERY_TEST_KEY", "test-key")


def _client(srv, provider: str, rows: list | None = None, **settings):
    options = dict(provider=provider, base_url=srv.base_url, api_key_env="DISTILLERY_TEST_KEY", batch=True,
                   batch_poll_s=0.05, model=MODEL[provider])
    return build_client(LLMSettings(**{**options, **settings}), usage_sink=rows.extend if rows is not None else None,
                        logger=log)


def _rows(n: int = 20) -> list[str]:
    return [f"d{i:03d}" for i in range(n)]


def test_call_ids_are_stable_and_fit_anthropics_custom_id_pattern():
    messages = [ChatMessage(role="user", content="hi")]
    a = call_id("k" * 64, messages, 64, 1)
    assert a == call_id("k" * 64, messages, 64, 1) and len(a) == 64 and a.isalnum()
    assert len({a, call_id("k" * 64, messages, 128, 1), call_id("k" * 64, messages, 64, 2)}) == 3


def test_batch_price_is_half_the_list_price_for_both_providers():
    for provider, model in MODEL.items():
        online = estimate_cost(provider, model, 1000, 500)
        assert estimate_cost(provider, model, 1000, 500, batch=True) == pytest.approx(online / 2)


def test_batch_mode_needs_a_provider_with_a_batch_api_and_the_cache(data_dir):
    with pytest.raises(ConfigError, match="no batch API"):
        build_client(LLMSettings(provider="local", batch=True))
    with pytest.raises(ConfigError, match="response cache"):
        build_client(LLMSettings(provider="anthropic", batch=True, cache=False))
    assert LLMSettings.from_env({"DISTILLERY_LLM_BATCH": "1", "DISTILLERY_LLM_BATCH_RETRY_ONLINE": "yes"}).batch
    assert not LLMSettings.from_env({"DISTILLERY_LLM_BATCH": "0"}).batch


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_every_request_goes_in_one_batch_once_at_the_batch_price(data_dir, provider, serve):
    usage: list = []
    with serve(batch_latency_s=0.2) as srv:
        client = _client(srv, provider, usage)
        run = run_task(Docs(), _rows(), client)
        client.close()
        assert len(run.records) == 20 and not run.failures and not run.rejects
        assert srv.request_count == 0  # nothing online
        [batch_id] = srv.batches
        assert sorted(srv.submissions.values()) == [1] * 20 and sorted(srv.batch_lines.values()) == [1] * 20
        assert [r.ok for r in run.results.values()] == [True] * 20
        paid = [r for r in usage if not r["cached"]]
        assert len(paid) == 20 and all(r["batch_ids"] == [batch_id] for r in paid)
        for row in paid:  # each answer priced at half the list price
            online = estimate_cost(provider, MODEL[provider], row["input_tokens"], row["output_tokens"])
            assert row["cost_usd"] == pytest.approx(online / 2, abs=1e-8)
            assert row["online_cost_usd"] == pytest.approx(online, abs=1e-8)
        meta = client.batch_report.metadata(provider)
        assert meta["llm_batch_ids"] == batch_id and meta["llm_batch_succeeded"] == 20
        assert meta["llm_batch_cost_usd"] > 0
        assert meta["llm_batch_saved_usd"] == pytest.approx(meta["llm_batch_cost_usd"], abs=2e-6)
        assert run.usage.cost_usd == pytest.approx(meta["llm_batch_cost_usd"], abs=1e-6)

        again = run_task(Docs(), _rows(), _client(srv, provider))  # answered by the cache: nothing sent
        assert again.usage.cache_hits == 20 and len(srv.batches) == 1
        endpoint = client.batch_api.endpoint
    assert endpoint and endpoint.startswith("http://127.0.0.1:")
    assert BatchLedger(data_dir / "llm_cache" / "batches").open_entries(provider, endpoint) == []  # all settled
    closed = json.loads(next((data_dir / "llm_cache" / "batches" / provider).glob("*.json")).read_text())
    assert closed["state"] == "closed" and closed["endpoint"] == endpoint and len(closed["calls"]) == 20


@pytest.mark.parametrize("provider,serve,outcome", [
    pytest.param("anthropic", serve_anthropic, "errored", id="anthropic-errored"),
    pytest.param("anthropic", serve_anthropic, "expired", id="anthropic-expired"),
    pytest.param("openai", serve_openai_compat, "expired", id="openai-expired"),
    pytest.param("openai", serve_openai_compat, "canceled", id="openai-canceled")])
def test_failed_items_are_named_and_asked_again_in_the_next_batch(data_dir, provider, serve, outcome, caplog):
    with serve(batch_latency_s=0.1, batch_faults=fail_first(0.25, outcome)) as srv, caplog.at_level(logging.INFO):
        client = _client(srv, provider)
        run = run_task(Docs(), _rows(), client)
        faulted = [k for k, n in srv.submissions.items() if n == 2]
        assert faulted and sorted(srv.submissions.values()) == [1] * (20 - len(faulted)) + [2] * len(faulted)
        assert len(run.records) == 20 and not run.failures and len(srv.batches) == 2 and srv.request_count == 0
        assert client.batch_report.outcomes[outcome] == len(faulted)
        assert client.batch_report.outcomes["succeeded"] == 20
        assert f"request {outcome}" in caplog.text and "asked again in the next batch" in caplog.text


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_failed_items_can_be_asked_again_online(data_dir, provider, serve):
    with serve(batch_latency_s=0.1, batch_faults=fail_first(0.25, "expired")) as srv:
        run = run_task(Docs(), _rows(), _client(srv, provider, batch_retry_online=True))
        faulted = [k for k, n in srv.submissions.items() if n == 2]
        assert len(run.records) == 20 and len(srv.batches) == 1 and srv.request_count == len(faulted) > 0


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_items_that_keep_failing_or_are_refused_are_named_failures_never_records(data_dir, provider, serve):
    def faults(line, submission):
        # the request's messages only: a line's custom_id is a hex digest, which can itself contain "d002"
        text = json.dumps((line.get("body") or line.get("params"))["messages"])
        return "errored" if "d001" in text else "invalid" if "d002" in text else None

    usage: list = []
    with serve(batch_latency_s=0.05, batch_faults=faults) as srv:
        run = run_task(Docs(), _rows(5), _client(srv, provider, usage, max_attempts=3))
        assert sorted(f.key for f in run.failures) == ["d001", "d002"] and len(run.records) == 3
        assert run.usage.failures_by_reason == {"batch_errored": 2}
        counts = sorted(srv.submissions.values())
        assert counts == [1, 1, 1, 1, 3]  # the server error asked 3 times (max_attempts), the refusal once
        failed = [r for r in usage if not r["ok"]]
        assert len(failed) == 2 and all(r["error"] and "batch" in r["error"] for r in failed)
        again = run_task(Docs(), _rows(5), _client(srv, provider, max_attempts=1))  # failures are asked again
        assert again.usage.cache_hits == 3 and len(again.failures) == 2


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_json_reasks_and_larger_budgets_go_into_the_next_batch(data_dir, provider, serve):
    def reply(messages, body):
        last = str(messages[-1]["content"])
        if "Judge" in last:
            return "I think it deserves a 7."  # not JSON: re-asked with the reason
        if "could not be used" in last:
            return json.dumps({"score": 7})
        return "one two three four five six seven eight"  # 8 words: cut off at 4 tokens, whole at 8

    with serve(batch_latency_s=0.05, reply=reply) as srv:
        client = _client(srv, provider)
        verdicts = run_task(Verdicts(), _rows(3), client)
        assert verdicts.records == [{"score": 7}] * 3 and len(srv.batches) == 2
        docs = run_task(Docs(max_tokens=4), _rows(3), client)
        assert docs.records == ["one two three four five six seven eight"] * 3 and len(srv.batches) == 4
        assert all(r.finish_reason == "stop" and r.attempts == 2 for r in docs.results.values())
        assert srv.request_count == 0


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_a_batch_left_open_is_polled_by_the_next_run_never_sent_again(data_dir, provider, serve, tmp_path):
    journal = tmp_path / "journal.jsonl"
    with serve(batch_latency_s=3600) as srv:
        first = run_task(Docs(), _rows(), _client(srv, provider, batch_wait_s=0.3), journal=journal)
        assert not first.records and first.usage.failures_by_reason == {"batch_pending": 20}
        [batch_id] = srv.batches
        book = TaskJournal(journal)  # the batch was journalled before the run waited on it
        assert [b["batch_id"] for b in book.batches] == [batch_id] and not book.entries
        assert len(book.batches[0]["request_keys"]) == 20
        [entry] = BatchLedger(data_dir / "llm_cache" / "batches").open_entries(provider, _client(
            srv, provider).batch_api.endpoint)
        assert entry["batch_id"] == batch_id and len(entry["unsettled"]) == 20

        srv.batch_latency_s = 0.0
        client = _client(srv, provider)
        second = run_task(Docs(), _rows(), client, journal=journal)
        assert len(second.records) == 20 and list(srv.batches) == [batch_id]
        assert sorted(srv.submissions.values()) == [1] * 20
        meta = client.batch_report.metadata(provider)
        assert meta["llm_batch_resumed_ids"] == batch_id and meta["llm_batch_calls_resumed"] == 20
        assert meta["llm_batch_calls_submitted"] == 0


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_answers_no_run_waits_for_any_more_are_cached_and_paid_once(data_dir, provider, serve):
    usage: list = []
    with serve(batch_latency_s=3600) as srv:
        run_task(Docs(), _rows(10), _client(srv, provider, batch_wait_s=0.2))
        srv.batch_latency_s = 0.0
        half = run_task(Docs(), _rows(10)[:5], _client(srv, provider, usage))  # the other 5 answers: orphans
        assert len(half.records) == 5 and len(srv.batches) == 1
        assert len(usage) == 10 and sum(bool(r.get("batch_orphan")) for r in usage) == 5
        rest = run_task(Docs(), _rows(10)[5:], _client(srv, provider, usage))
        assert rest.usage.cache_hits == 5 and len(srv.batches) == 1 and sorted(srv.submissions.values()) == [1] * 10
        assert len(usage) == 15 and sum(r["cached"] for r in usage) == 5  # one paid row per answer


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_two_runs_at_once_send_each_request_once(data_dir, provider, serve):
    outs: dict = {}
    with serve(batch_latency_s=0.3) as srv:
        def go(name, rows):
            outs[name] = run_task(Docs(), rows, _client(srv, provider))

        threads = [threading.Thread(target=go, args=("a", _rows())), threading.Thread(target=go, args=(
            "b", list(reversed(_rows()))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(srv.submissions.values()) == [1] * 20
        assert len(outs["a"].records) == len(outs["b"].records) == 20
        assert dict(zip(outs["a"].keys, outs["a"].records)) == dict(zip(outs["b"].keys, outs["b"].records))


@pytest.mark.parametrize("provider,serve,api", [
    pytest.param("anthropic", serve_anthropic, AnthropicBatchAPI, id="anthropic"),
    pytest.param("openai", serve_openai_compat, OpenAIBatchAPI, id="openai")])
def test_batches_are_split_by_the_providers_request_and_byte_limits(data_dir, provider, serve, api, monkeypatch):
    assert (AnthropicBatchAPI.max_requests, AnthropicBatchAPI.max_bytes) == (100_000, 256 * 1024 * 1024)
    assert (OpenAIBatchAPI.max_requests, OpenAIBatchAPI.max_bytes) == (50_000, 200 * 1024 * 1024)
    monkeypatch.setattr(api, "max_requests", 7)
    with serve(batch_latency_s=0.05) as srv:
        run = run_task(Docs(), _rows(), _client(srv, provider))
        assert len(run.records) == 20 and sorted(len(b.get("requests") or b.get("lines")) for b in
                                                 srv.batches.values()) == [6, 7, 7]
        monkeypatch.setattr(api, "max_requests", 1000)
        one_line = max(api.size(api(_client(srv, provider).provider).line(
            "x" * 64, [ChatMessage(role="user", content="Write document d100.")],
            dict(model=MODEL[provider], temperature=0.7, max_tokens=64, json_schema=None, stop=None, seed=None))),
            1)
        monkeypatch.setattr(api, "max_bytes", one_line * 5 + 200)
        run = run_task(Docs(), [f"e{i:03d}" for i in range(12)], _client(srv, provider))
        assert len(run.records) == 12 and len(srv.batches) == 3 + 3  # 12 lines of about one_line bytes: 5+5+2


def test_the_fakes_refuse_what_the_batch_apis_refuse(data_dir):
    import anthropic
    import openai

    with serve_anthropic() as srv:
        sdk = anthropic.Anthropic(api_key="k", base_url=srv.base_url, max_retries=0)
        params = {"model": "claude-sonnet-5-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(anthropic.BadRequestError, match="duplicate custom_id"):
            sdk.messages.batches.create(requests=[{"custom_id": "a", "params": params}] * 2)
        with pytest.raises(anthropic.BadRequestError, match="pattern"):
            sdk.messages.batches.create(requests=[{"custom_id": "a/b", "params": params}])
    with serve_openai_compat() as srv:
        sdk = openai.OpenAI(api_key="k", base_url=srv.base_url, max_retries=0)
        line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}
        uploaded = sdk.files.create(file=("in.jsonl", json.dumps(line).encode() + b"\n"), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="completion_window"):
            sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.status == "failed" and batch.errors.data[0].line == 1


def test_a_batch_the_provider_refuses_fails_its_requests_with_the_reason(data_dir, monkeypatch):
    original = OpenAIBatchAPI.line

    def bad_url(self, custom_id, messages, kwargs):  # a line the Batch API refuses as a whole
        return {**original(self, custom_id, messages, kwargs), "url": "/v1/embeddings"}

    monkeypatch.setattr(OpenAIBatchAPI, "line", bad_url)
    with serve_openai_compat(batch_latency_s=0.05) as srv:
        run = run_task(Docs(), _rows(3), _client(srv, "openai"))
        assert not run.records and len(run.failures) == 3
        assert all("refused the batch" in f.reason and "line" in f.reason for f in run.failures)
        assert len(srv.batches) == 1  # not sent again in this run


# -- lost submission replies: the intent, the look-up, adoption (see llm.batch's module docstring) -------------------
def _intents(data_dir, provider: str) -> list[dict]:
    folder = data_dir / "llm_cache" / "batches" / provider / "intents"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _other_batch(srv, provider: str, n: int, tag: str = "other") -> str:
    """A batch of ``n`` requests someone else sent to the same account (not this client's custom_ids)."""
    import anthropic
    import openai

    if provider == "anthropic":
        sdk = anthropic.Anthropic(api_key="k", base_url=srv.base_url, max_retries=0)
        params = {"model": MODEL[provider], "max_tokens": 8}
        return sdk.messages.batches.create(requests=[
            {"custom_id": f"{tag}-{i}", "params": {**params, "messages": [{"role": "user", "content": f"{tag} {i}"}]}}
            for i in range(n)]).id
    sdk = openai.OpenAI(api_key="k", base_url=srv.base_url, max_retries=0)
    lines = [{"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": MODEL[provider], "messages": [{"role": "user", "content": f"{tag} {i}"}]}} for i in range(n)]
    uploaded = sdk.files.create(file=("other.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()),
                                purpose="batch")
    return sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={"distillery_submission": "not-ours"}).id


@pytest.mark.parametrize("provider,serve,after_s", [
    pytest.param("anthropic", serve_anthropic, 0.0, id="anthropic-connection-closed"),
    pytest.param("openai", serve_openai_compat, 1.5, id="openai-timeout")])
def test_a_batch_whose_submission_reply_was_lost_is_adopted_by_the_next_run_never_sent_twice(
        data_dir, provider, serve, after_s, monkeypatch, caplog):
    api = AnthropicBatchAPI if provider == "anthropic" else OpenAIBatchAPI
    monkeypatch.setattr(api, "list_page_size", 2)  # the look-up pages through the listing
    with serve(batch_latency_s=0.2) as srv, caplog.at_level(logging.INFO):
        for i in range(3):  # earlier batches of other sizes (and other metadata) in the same account
            _other_batch(srv, provider, 3 + i, tag=f"old{i}")
        srv.lose_batch_replies, srv.lose_reply_after_s = 1, after_s
        first = run_task(Docs(), _rows(), _client(srv, provider, timeout_s=0.5))
        [lost] = srv.lost_replies
        assert not first.records and first.usage.failures_by_reason == {"batch_submission_lost": 20}
        assert len(srv.batches) == 4 and sorted(srv.batch_lines[c] for c in srv.batches[lost]["submission"]) == [1] * 20
        [intent] = _intents(data_dir, provider)
        assert intent["requests"] == 20 and set(intent["calls"]) == set(srv.batches[lost]["submission"])
        if provider == "openai":  # the key travels in the metadata and in the input file's name
            assert srv.batches[lost]["metadata"]["distillery_submission"] == intent["submission_key"]
            assert any(intent["submission_key"] in rec["filename"] for rec, _ in srv.files.values())

        client = _client(srv, provider)
        second = run_task(Docs(), _rows(), client)
        assert len(second.records) == 20 and not second.failures
        assert len(srv.batches) == 4 and set(srv.submissions.values()) == {1}
        assert all(n == 1 for n in srv.batch_lines.values())  # every line of every batch sent once
        meta = client.batch_report.metadata(provider)
        assert meta["llm_batch_resumed_ids"] == lost and meta["llm_batch_calls_submitted"] == 0
        assert meta["llm_batch_calls_resumed"] == 20 and meta["llm_batch_succeeded"] == 20
        assert not _intents(data_dir, provider)
        entry = json.loads((data_dir / "llm_cache" / "batches" / provider / f"{lost}.json").read_text())
        assert entry["adopted"]["by"] == ("metadata" if provider == "openai" else "request count")
        assert entry["state"] == "closed" and entry["submission_key"] == intent["submission_key"]
        lists = [r for r in srv.requests if r["method"] == "GET" and r["path"].rstrip("/") in (
            "/v1/batches", "/v1/messages/batches")]
        assert len(lists) >= 2  # more than one page was read
        assert f"batch {lost} adopted" in caplog.text


def test_an_ambiguous_lost_anthropic_submission_is_named_not_sent_again_unless_allowed(data_dir, caplog):
    with serve_anthropic(batch_latency_s=0.1) as srv, caplog.at_level(logging.INFO):
        srv.lose_batch_replies = 1
        first = run_task(Docs(), _rows(), _client(srv, "anthropic"))
        assert first.usage.failures_by_reason == {"batch_submission_lost": 20}
        [lost] = srv.lost_replies
        other = _other_batch(srv, "anthropic", 20)  # as many requests, after the intent: which one is ours?
        second = run_task(Docs(), _rows(), _client(srv, "anthropic"))
        assert not second.records and second.usage.failures_by_reason == {"batch_submission_unknown": 20}
        assert len(srv.batches) == 2 and all(n == 1 for n in srv.batch_lines.values())  # nothing sent again
        assert lost in caplog.text and other in caplog.text and "DISTILLERY_LLM_BATCH_RESUBMIT_UNKNOWN" in caplog.text
        assert len(_intents(data_dir, "anthropic")) == 1  # kept: the next run looks again

        assert LLMSettings.from_env({"DISTILLERY_LLM_BATCH_RESUBMIT_UNKNOWN": "1"}).batch_resubmit_unknown
        third = run_task(Docs(), _rows(), _client(srv, "anthropic", batch_resubmit_unknown=True))
        assert len(third.records) == 20 and len(srv.batches) == 3  # sent again, as the setting allows
        assert not _intents(data_dir, "anthropic")


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_a_lost_submission_the_provider_never_took_is_sent_and_a_wrong_adoption_undone(data_dir, provider, serve,
                                                                                      caplog):
    with serve(batch_latency_s=0.1) as srv, caplog.at_level(logging.INFO):
        srv.lose_batch_replies = 1
        run_task(Docs(), _rows(5), _client(srv, provider))
        [lost] = srv.lost_replies
        del srv.batches[lost]  # as if the process died before the provider took it
        srv.submissions.clear(), srv.batch_lines.clear()
        other = _other_batch(srv, provider, 5)  # as many requests, not ours
        second = run_task(Docs(), _rows(5), _client(srv, provider))
        if provider == "anthropic":  # adopted by its count, un-adopted once its results show other custom_ids
            assert not second.records and second.usage.failures_by_reason == {"batch_submission_unknown": 5}
            assert f"batch {other} was adopted by its request count" in caplog.text
            [intent] = _intents(data_dir, "anthropic")
            assert intent["rejected"] == [other]
            second = run_task(Docs(), _rows(5), _client(srv, provider))  # the other batch is never adopted again
        assert len(second.records) == 5 and len(srv.batches) == 2  # the metadata tells OpenAI's apart at once
        assert all(n == 1 for n in srv.batch_lines.values()) and not _intents(data_dir, provider)


def test_the_fakes_list_batches_newest_first_in_pages_as_the_sdks_read_them(data_dir):
    import anthropic
    import openai

    with serve_anthropic() as srv:
        ids = [_other_batch(srv, "anthropic", 1, tag=f"b{i}") for i in range(5)]
        sdk = anthropic.Anthropic(api_key="k", base_url=srv.base_url, max_retries=0)
        assert [b.id for b in sdk.messages.batches.list(limit=2)] == ids[::-1]  # 3 pages, after_id
        page = sdk.messages.batches.list(limit=2)
        assert (page.has_more, page.first_id, page.last_id) == (True, ids[4], ids[3])
        assert [b.id for b in sdk.messages.batches.list(limit=2, before_id=ids[0])] == [ids[2], ids[1], ids[4],
                                                                                        ids[3]]  # before_id pages
        assert len([r for r in srv.requests if r["path"] == "/v1/messages/batches" and r["method"] == "GET"]) == 6
    with serve_openai_compat() as srv:
        ids = [_other_batch(srv, "openai", 1, tag=f"b{i}") for i in range(5)]
        sdk = openai.OpenAI(api_key="k", base_url=srv.base_url, max_retries=0)
        assert [b.id for b in sdk.batches.list(limit=2)] == ids[::-1]
        with pytest.raises(openai.BadRequestError, match="limit"):
            sdk.batches.list(limit=101)
