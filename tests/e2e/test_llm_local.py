"""Provider ``local`` on the embedded SmolLM2 GGUF: text, schema-valid JSON, and a cache hit that never
loads the model (fresh client, loader replaced by one that fails), all recorded in the catalogue."""

import pytest

from distillery_assets.llm import ChatMessage, LLMRequest, LLMSettings, build_client
from distillery_assets.llm.providers import local
from resources.catalog import CatalogResource
from tests.support.llm import answers

SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
          "required": ["colour", "count"], "additionalProperties": False}


@pytest.mark.e2e
def test_local_text_json_and_cache_without_loading(data_dir, monkeypatch):
    monkeypatch.setattr(local, "_MODELS", {})
    loads = []
    real_loader = local._load_model
    monkeypatch.setattr(local, "_load_model", lambda *a: loads.append(a) or real_loader(*a))
    catalog = CatalogResource().get()
    settings = LLMSettings(provider="local", n_ctx=1024, n_threads=2)
    requests = [
        LLMRequest(messages=[ChatMessage(role="user", content="Name one fruit.")], max_tokens=12,
                   temperature=0.0, seed=1, tag="e2e_text"),
        LLMRequest(messages=[ChatMessage(role="system", content="You reply in JSON."),
                             ChatMessage(role="user", content="Pick a colour and a number between 1 and 9.")],
                   max_tokens=40, temperature=0.0, seed=1, json_schema=SCHEMA, tag="e2e_json"),
    ]
    first = answers(build_client(settings, usage_sink=catalog.record_llm_calls, run_id="run-a"), requests)
    text, js = first
    assert text.ok and text.text.strip() and not text.cached and text.usage.output_tokens > 0
    assert js.ok and set(js.parsed) == {"colour", "count"} and isinstance(js.parsed["count"], int), js.error
    assert len(loads) == 1  # loaded once for both requests

    # a fresh client (and an empty model registry) must answer from the cache without loading anything
    monkeypatch.setattr(local, "_MODELS", {})
    monkeypatch.setattr(local, "_load_model", lambda *a: pytest.fail("the model was loaded for a cache hit"))
    again = answers(build_client(settings, usage_sink=catalog.record_llm_calls, run_id="run-b"), requests)
    assert [r.cached for r in again] == [True, True]
    assert [r.text for r in again] == [text.text, js.text] and again[1].parsed == js.parsed

    rows = catalog.query("select run_id, tag, cached, input_tokens, output_tokens, latency_s, cost_usd "
                         "from llm_calls order by run_id, tag")
    assert [(r["run_id"], r["tag"], r["cached"]) for r in rows] == [
        ("run-a", "e2e_json", False), ("run-a", "e2e_text", False),
        ("run-b", "e2e_json", True), ("run-b", "e2e_text", True)]
    assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 and r["latency_s"] >= 0 and r["cost_usd"] == 0
               for r in rows)
