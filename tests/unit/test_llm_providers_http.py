"""Each provider through its real SDK against the loopback fake of its API (tests.support.fakeapi)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.fakeapi import serve_anthropic, serve_fal_queue, serve_openai_compat
from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest, LLMSettings
from distillery_assets.llm.settings import build_provider

KEY = "sk-test-PLANTED-123"
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
          "required": ["title", "score"]}


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def client(provider_name, base_url, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    settings = LLMSettings(provider=provider_name, base_url=base_url, timeout_s=kw.pop("timeout_s", 5.0))
    kw.setdefault("sleep", Sleeps())
    return LLMClient(build_provider(settings), cache_dir=tmp_path / "cache", timeout_s=settings.timeout_s,
                     backoff_initial_s=0.01, **kw)


def ask(text="Name a colour.", **kw):
    return LLMRequest(messages=[ChatMessage(role="system", content="Be brief."),
                                ChatMessage(role="user", content=text)], max_tokens=64, **kw)


# ---------------------------------------------------------------- openai-compatible
def test_openai_text_usage_and_auth(tmp_path, monkeypatch):
    with serve_openai_compat(reply=lambda messages, body: "Teal, mostly.") as srv:
        result = client("openai", srv.base_url, tmp_path, monkeypatch).complete(ask(model="my-model"))
        sent = srv.requests[-1]
    assert result.ok and result.text == "Teal, mostly." and result.model == "my-model"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens == 2 and result.finish_reason == "stop"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_openai_429_retry_after_500_and_garbage_are_retried(tmp_path, monkeypatch):
    sleeps = Sleeps()
    with serve_openai_compat(script=[("429", 3), ("500",), ("garbage",)]) as srv:
        result = client("openai", srv.base_url, tmp_path, monkeypatch, sleep=sleeps).complete(ask())
        assert srv.request_count == 4
    assert result.ok and result.text.startswith("Answer ")
    assert 3.0 <= sleeps[0] <= 3.3 and len(sleeps) == 3


def test_openai_timeout_is_retried_then_reported(tmp_path, monkeypatch):
    with serve_openai_compat(script=[("timeout", 1.5)]) as srv:
        result = client("openai", srv.base_url, tmp_path, monkeypatch, timeout_s=0.3).complete(ask())
        assert result.ok and srv.request_count == 2
    with serve_openai_compat(script=[("timeout", 1.5)]) as srv:
        result = client("openai", srv.base_url, tmp_path, monkeypatch, timeout_s=0.3,
                        max_attempts=1).complete(ask("other"))
    assert not result.ok and "timeout" in result.error


def test_openai_malformed_json_is_reasked_and_length_is_rejected(tmp_path, monkeypatch):
    with serve_openai_compat(script=[("malformed",), ("ok",), ("length",)]) as srv:
        c = client("openai", srv.base_url, tmp_path, monkeypatch, length_retries=0)
        good = c.complete(ask(json_schema=SCHEMA))
        assert srv.request_count == 2
        assert srv.requests[1]["body"]["messages"][-2]["content"].startswith("Sure! Here is the JSON")
        cut = c.complete(ask("again", json_schema=SCHEMA))
    assert good.ok and set(good.parsed) == {"title", "score"}
    assert srv.requests[0]["body"]["response_format"]["type"] == "json_schema"
    assert not cut.ok and cut.finish_reason == "length" and "finish_reason=length" in cut.error


@pytest.mark.parametrize("refusal_status", [400, 500])  # 500: what llama-cpp-python's server answers
def test_openai_falls_back_to_json_object_when_json_schema_is_refused(tmp_path, monkeypatch, refusal_status):
    with serve_openai_compat(json_schema_supported=False, json_schema_refusal_status=refusal_status) as srv:
        c = client("openai", srv.base_url, tmp_path, monkeypatch)
        first, second = c.complete(ask(json_schema=SCHEMA)), c.complete(ask("b", json_schema=SCHEMA))
        formats = [r["body"].get("response_format", {}).get("type") for r in srv.requests]
        system = srv.requests[-1]["body"]["messages"][0]["content"]
    assert first.ok and second.ok and set(second.parsed) == {"title", "score"}
    assert formats == ["json_schema", "json_object", "json_object"]  # refused once, remembered
    assert "JSON Schema" in system and '"score"' in system


def test_openai_fake_streams_sse_and_lists_models(monkeypatch):
    import openai

    with serve_openai_compat(model="fake-7b") as srv:
        sdk = openai.OpenAI(api_key="x", base_url=srv.base_url, max_retries=0)
        assert [m.id for m in sdk.models.list()] == ["fake-7b"]
        stream = sdk.chat.completions.create(model="fake-7b", stream=True, max_tokens=50,
                                             messages=[{"role": "user", "content": "hi"}])
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces).startswith("Answer ") and len(pieces) > 3


def test_a_reply_cut_at_max_tokens_is_asked_again_with_a_larger_budget_never_cached(tmp_path, monkeypatch):
    with serve_openai_compat(script=[("length",), ("ok",), ("length",), ("length",)]) as srv:
        c = client("openai", srv.base_url, tmp_path, monkeypatch, length_retries=1)
        whole = c.complete(ask("story"))
        budgets = [r["body"].get("max_tokens") or r["body"]["max_completion_tokens"] for r in srv.requests]
        assert budgets[1] == 2 * budgets[0]  # the second ask, twice the budget
        assert whole.ok and whole.finish_reason == "stop" and whole.attempts == 2
        cut = c.complete(ask("another story"))
        assert not cut.ok and "finish_reason=length" in cut.error and f"max_tokens={budgets[1]}" in cut.error
        again = client("openai", srv.base_url, tmp_path, monkeypatch, length_retries=0).complete(
            ask("another story"))
        assert srv.request_count == 5  # the cut-off answer was not cached: asked again, paid again
    assert not again.cached


# ---------------------------------------------------------------- anthropic
def test_anthropic_system_is_separate_and_faults_are_handled(tmp_path, monkeypatch):
    sleeps = Sleeps()
    with serve_anthropic(script=[("429", 2), ("500",), ("malformed",), ("ok",), ("length",)]) as srv:
        c = client("anthropic", srv.base_url, tmp_path, monkeypatch, sleep=sleeps, length_retries=0)
        good = c.complete(ask(json_schema=SCHEMA))
        cut = c.complete(ask("long one", json_schema=SCHEMA))
        first = srv.requests[0]
    assert good.ok and set(good.parsed) == {"title", "score"} and good.model == "claude-sonnet-5-5"
    assert 2.0 <= sleeps[0] <= 2.2
    assert first["body"]["system"] == "Be brief."
    assert all(m["role"] != "system" for m in first["body"]["messages"])
    assert "temperature" not in first["body"]  # API 2026-10-21 rejects sampling parameters
    assert first["body"]["output_config"]["format"]["schema"] == {**SCHEMA, "additionalProperties": False}
    assert not cut.ok and cut.finish_reason == "length"


def test_anthropic_timeout(tmp_path, monkeypatch):
    with serve_anthropic(script=[("timeout", 1.5)]) as srv:
        result = client("anthropic", srv.base_url, tmp_path, monkeypatch, timeout_s=0.3).complete(ask())
        assert srv.request_count == 2
    assert result.ok and result.usage.output_tokens > 0


def test_missing_key_is_a_clear_rejection(tmp_path, monkeypatch):
    provider = build_provider(LLMSettings(provider="anthropic", api_key_env="MY_CLAUDE_KEY"))
    result = LLMClient(provider, cache_dir=None).complete(ask())
    assert not result.ok and "MY_CLAUDE_KEY is not set" in result.error


# ---------------------------------------------------------------- fal (subprocess: fal-client reads hosts at import)
FAL_SCRIPT = textwrap.dedent("""
    import json, sys
    from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest, LLMSettings
    from distillery_assets.llm.settings import build_provider
    schema = json.loads(sys.argv[1])
    provider = build_provider(LLMSettings(provider="fal", timeout_s=0.6))
    provider.poll_interval_s = 0.02
    client = LLMClient(provider, cache_dir=None, timeout_s=0.6, backoff_initial_s=0.01, max_attempts=3,
                       length_retries=0)
    def ask(text, **kw):
        return LLMRequest(messages=[ChatMessage(role="system", content="Be brief."),
                                    ChatMessage(role="user", content=text)], max_tokens=64, **kw)
    out = [client.complete(ask("a")), client.complete(ask("b")), client.complete(ask("c", json_schema=schema)),
           client.complete(ask("d", json_schema=schema)), client.complete(ask("e"))]
    print(json.dumps([r.model_dump() for r in out]))
""")


def test_fal_queue_via_fal_client_over_tls(tmp_path):
    script = [("500",), ("ok",), ("429", 0), ("ok",), ("malformed",), ("ok",), ("length",), ("timeout", 3.0)]
    with serve_fal_queue(latency_s=0.05, script=script) as srv:
        env = {**os.environ, **srv.client_env(), "FAL_KEY": "fal-id-PLANTED:123secret",
               "DISTILLERY_DATA_DIR": str(tmp_path)}
        proc = subprocess.run([sys.executable, "-c", FAL_SCRIPT, json.dumps(SCHEMA)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        methods = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in srv.requests]
        auth = srv.requests[0]["headers"]["authorization"]
    a, b, c, d, e = json.loads(proc.stdout.strip().splitlines()[-1])
    assert a["ok"] and a["text"].startswith("Answer ") and a["model"] == "qwen/qwen-2.5-72b-instruct"
    assert a["usage"]["input_tokens"] > 0 and a["usage"]["cost_usd"] > 0  # cost reported by the router
    assert b["ok"]  # 429 retried by fal-client itself
    assert c["ok"] and set(c["parsed"]) == {"title", "score"}  # malformed, re-asked
    assert not d["ok"] and d["finish_reason"] == "length"
    assert e["ok"] and ("PUT", "cancel") in methods  # the stuck request was cancelled and retried
    assert auth == "Key fal-id-PLANTED:123secret"
    assert "PLANTED" not in proc.stderr


def test_fal_key_from_dotenv(tmp_path, monkeypatch):
    from distillery_assets.llm.providers.fal_router import read_key

    dotenv = tmp_path / ".env"
    dotenv.write_text("# keys\n\nOTHER=1\nFAL_KEY = abc:def \n", encoding="utf-8")
    assert read_key("FAL_KEY", dotenv) == "abc:def"
    monkeypatch.setenv("FAL_KEY", "from-env")
    assert read_key("FAL_KEY", dotenv) == "from-env"
    assert read_key("NOPE", dotenv) is None
