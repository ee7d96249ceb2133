"""LLMResource inside a real Dagster run: progress in the run log, usage rows in the catalogue with run_id."""

import dagster as dg

from tests.support.fakeapi import serve_openai_compat
from distillery_assets.llm import ChatMessage, LLMRequest
from resources.catalog import CatalogResource
from resources.llm import LLMResource
from tests.support.llm import answers


@dg.asset
def greetings(context: dg.AssetExecutionContext, llm: LLMResource) -> list[str]:
    client = llm.get_client(context)
    requests = [LLMRequest(messages=[ChatMessage(role="user", content=f"greet {i}")], max_tokens=20, tag="greetings")
                for i in range(12)]
    return [r.text for r in answers(client, requests, label="greetings/demo")]


def test_resource_logs_progress_and_records_usage(data_dir, monkeypatch):
    monkeypatch.setenv("DISTILLERY_LLM_PROVIDER", "openai")
    monkeypatch.setenv("DISTILLERY_LLM_CONCURRENCY", "4")
    catalog = CatalogResource()
    with serve_openai_compat(latency_s=0.02) as srv, dg.instance_for_test() as instance:
        monkeypatch.setenv("DISTILLERY_LLM_BASE_URL", srv.base_url)
        llm = LLMResource.from_env(catalog=catalog)
        assert llm.provider == "openai" and llm.base_url == srv.base_url and llm.api_key_env is None
        first = dg.materialize([greetings], resources={"llm": llm}, instance=instance)
        second = dg.materialize([greetings], resources={"llm": llm}, instance=instance)
        assert srv.request_count == 12  # the second run was served from the cache
        logs = [e.message for e in instance.all_logs(first.run_id) if e.message]
    assert first.success and second.success
    assert first.output_for_node("greetings") == second.output_for_node("greetings")
    assert any(m.startswith("greetings/demo: 12/12 done (0 cached, 0 failed)") for m in logs)
    rows = catalog.get().query("select run_id, cached, count(*) as n, sum(input_tokens) as tokens "
                               "from llm_calls where tag = 'greetings' group by run_id, cached order by cached")
    assert [(r["run_id"], r["cached"], r["n"]) for r in rows] == [(first.run_id, False, 12), (second.run_id, True, 12)]
    assert rows[0]["tokens"] == rows[1]["tokens"] > 0


def test_get_client_without_context_or_catalogue(data_dir):
    client = LLMResource(provider="local").get_client()
    assert client.usage_sink is None and client.run_id is None and client.concurrency == 1


def test_bad_resource_config_names_the_problem(data_dir):
    import pytest

    from distillery_assets.llm import ConfigError

    with pytest.raises(ConfigError, match="provider"):
        LLMResource(provider="gemini").get_client()


@dg.asset
def noted(context: dg.AssetExecutionContext, llm: LLMResource) -> int:
    import logging

    llm.get_client(context)
    llm.get_client(context)  # a second client forwards nothing twice
    logging.getLogger("distillery_assets.threads").info("threads 1 -> 2 (a line the local model would write)")
    return 1


def test_a_step_with_a_client_shows_the_thread_changes_in_its_log(data_dir):
    """The local provider changes its threads per request (threads.SpareCores) and logs it on the
    ``distillery_assets.threads`` logger; a step that asked for a client shows those lines, once, until it ends."""
    import logging

    threads_log = logging.getLogger("distillery_assets.threads")
    handlers = list(threads_log.handlers)
    with dg.instance_for_test() as instance:
        result = dg.materialize([noted], resources={"llm": LLMResource(provider="local")}, instance=instance)
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert result.success
    assert sum(m == "threads 1 -> 2 (a line the local model would write)" for m in logs) == 1
    assert threads_log.handlers == handlers  # taken off when the step ended
