"""Model benchmark against the project's fake OpenAI-compatible server (real HTTP on 127.0.0.1, SSE stream)."""

import json

import pytest

from tests.support.fakeapi import openai_compat as fakeapi
from distillery_assets.theme import modelbench

MESSAGES = [{"role": "system", "content": "persona"}, {"role": "user", "content": "passage and topic"}]


def reply(messages, body):
    if "Rate a candidate" in messages[-1]["content"]:
        return json.dumps({"rating": 4, "reasoning": "valid JSON, in character"})
    return json.dumps({"user": "What guides the colony?", "assistant": "Reason and the collective, comrade."})


def test_streamed_run_lists_models_times_and_rates():
    with fakeapi.serve_openai_compat(reply=reply, model="fake-gen", token_delay_s=0.001) as srv:
        result = modelbench.run_benchmark(
            modelbench.BenchSettings(base_url=srv.base_url, evaluator_model="fake-judge", max_tokens=200), MESSAGES)
    [row] = result["ranked"]
    assert row["model"] == "fake-gen" and row["ok"] and row["rank"] == 1
    assert row["output_tokens"] > 0 and row["tokens_source"] == "usage"
    assert 0 < row["ttft_s"] <= row["total_s"] and row["tokens_per_s"] > 0
    assert row["hours_per_1000"] == pytest.approx(row["total_s"] * 1000 / 3600, abs=1e-4)
    assert json.loads(row["response"])["user"] == "What guides the colony?"
    assert row["rating"] == 4.0 and "character" in row["rating_reason"]
    table = modelbench.markdown_table(result)
    assert "fake-gen" in table and "4.0/5" in table


def test_unparseable_rating_is_missing_not_invented():
    assert modelbench.parse_rating("I'd say four")[0] is None
    assert modelbench.parse_rating('{"rating": 9, "reasoning": "x"}')[0] is None
    assert modelbench.parse_rating('ok {"rating": 2.5, "reasoning": "meh"}') == (2.5, "meh")


def test_failed_model_ranked_last_with_error():
    with fakeapi.serve_openai_compat(reply=reply, model="fake-gen") as srv:
        settings = modelbench.BenchSettings(base_url=srv.base_url, models=["fake-gen"])
        result = modelbench.run_benchmark(settings, MESSAGES)
    assert result["ranked"][0]["ok"] and result["ranked"][0]["rating"] is None
    settings = modelbench.BenchSettings(base_url="http://127.0.0.1:9/v1", models=["nowhere"], timeout_s=2)
    bad = modelbench.run_benchmark(settings, MESSAGES)
    assert not bad["ranked"][0]["ok"] and "ConnectError" in bad["ranked"][0]["error"]


def test_api_key_read_from_named_env_var_at_call_time(monkeypatch):
    settings = modelbench.BenchSettings(api_key_env="MY_BENCH_KEY")
    assert modelbench._api_key(settings) is None
    monkeypatch.setenv("MY_BENCH_KEY", "sk-test")
    assert modelbench._api_key(settings) == "sk-test"
    assert modelbench.make_client(settings).api_key == "sk-test"  # the SDK sends it as "Authorization: Bearer"
    assert "sk-test" not in repr(settings)


def test_evaluator_falls_back_to_json_object_mode():
    with fakeapi.serve_openai_compat(reply=reply, model="fake-gen", json_schema_supported=False) as srv:
        result = modelbench.run_benchmark(
            modelbench.BenchSettings(base_url=srv.base_url, evaluator_model="fake-judge"), MESSAGES)
    assert result["ranked"][0]["rating"] == 4.0
