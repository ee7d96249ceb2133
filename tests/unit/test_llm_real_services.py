"""The first real call works (issue 24): each remote provider's requests as the service takes them, checked
through the official SDK against the local servers in tests/support/fakeapi, which refuse what the real APIs
refuse; the defaults current by the installed SDKs' own end-of-life tables."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from datetime import date

import pytest

from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest, LLMSettings
from distillery_assets.llm import lifecycle
from distillery_assets.llm.pricing import PRICES_PER_MTOK, estimate_cost
from distillery_assets.llm.providers.anthropic_messages import DEFAULT_MODEL as ANTHROPIC_DEFAULT
from distillery_assets.llm.providers.fal_router import DEFAULT_MODEL as FAL_DEFAULT
from distillery_assets.llm.providers.openai_compat import DEFAULT_MODEL as OPENAI_DEFAULT
from distillery_assets.llm.providers.openai_compat import OpenAIProvider
from distillery_assets.llm.settings import build_client, build_provider
from tests.support.fakeapi import serve_anthropic, serve_fal_queue, serve_openai_compat

KEY = "sk-test-PLANTED-123"
DEFAULTS = {"anthropic": ANTHROPIC_DEFAULT, "openai": OPENAI_DEFAULT}


def ask(text="Name a colour.", **kw):
    return LLMRequest(messages=[ChatMessage(role="system", content="Be brief."),
                                ChatMessage(role="user", content=text)], max_tokens=64, **kw)


def client(provider_name, base_url, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    settings = LLMSettings(provider=provider_name, base_url=base_url, timeout_s=5.0)
    return LLMClient(build_provider(settings), cache_dir=tmp_path / "cache", timeout_s=5.0, backoff_initial_s=0.01,
                     sleep=lambda s: None, **kw)


# ------------------------------------------------------------------ 1. defaults current by the SDKs' tables
def test_the_sdk_tables_are_found_and_read():
    assert lifecycle.anthropic_table()["claude-sonnet-4-5"] == date(2026, 11, 30)
    assert lifecycle.openai_table()["gpt-4o-mini"] == date(2027, 1, 14)
    assert lifecycle.openai_table()["gpt-4.1-nano"] == date(2026, 10, 23)


@pytest.mark.parametrize("provider", sorted(DEFAULTS))
def test_default_models_are_not_past_their_end_of_life_in_the_installed_sdk(provider):
    model = DEFAULTS[provider]
    status = lifecycle.check(provider, model)
    assert status is None or not status.past, status.message()
    assert LLMSettings(provider=provider).resolved_model() == model


def test_the_price_table_knows_the_defaults_and_no_model_past_its_end_of_life():
    for provider, model in {**DEFAULTS, "fal": FAL_DEFAULT}.items():
        assert estimate_cost(provider, model, 1000, 1000) > 0, model
    past = [m for m in PRICES_PER_MTOK for p in ("anthropic", "openai")
            if (s := lifecycle.check(p, m)) is not None and s.past]
    assert past == []


def test_a_model_past_its_end_of_life_is_named_at_start_up_and_in_the_metadata(monkeypatch, caplog):
    from resources.llm import LLMResource

    monkeypatch.setenv("DISTILLERY_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("DISTILLERY_LLM_MODEL", "claude-sonnet-4-5")
    with caplog.at_level(logging.WARNING):
        resource = LLMResource.from_env()  # definitions load: start-up
    assert "claude-sonnet-4-5" in caplog.text and "end of life on 2026-11-30" in caplog.text

    class Context:
        run_id, log, added = "r1", logging.getLogger("ctx"), []

        def add_asset_metadata(self, metadata, asset_key=None):
            self.added.append(metadata)

    context = Context()
    resource.get_client(context).close()
    assert context.added == [{"llm_model": "claude-sonnet-4-5", "llm_model_end_of_life": "2026-11-30",
                              "llm_model_past_end_of_life": True,
                              "llm_model_lifecycle_source": context.added[0]["llm_model_lifecycle_source"]}]
    assert context.added[0]["llm_model_lifecycle_source"].startswith("anthropic ")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_client(LLMSettings(provider="anthropic"))  # the default: no warning
    assert "end of life" not in caplog.text


# ------------------------------------------------------------------ 2. Anthropic JSON mode, the project's schemas
def _real_schemas():
    from distillery_assets.filters.config import load_filter
    from distillery_assets.filters.oracle import verdict_model
    from distillery_assets.theme.generate import Exchange
    from tests.support.filters_defs import SHIPPED

    return {"theme Exchange": Exchange.model_json_schema(),
            "filter verdict": verdict_model(load_filter(SHIPPED / "educational_value" / "v1")).model_json_schema()}


def test_the_anthropic_fake_refuses_what_the_api_refuses():
    import anthropic

    from tests.support.fakeapi.anthropic_api import schema_problem

    schemas = _real_schemas()
    assert "minLength" in json.dumps(schemas["theme Exchange"]) and "maximum" in json.dumps(schemas["filter verdict"])
    with serve_anthropic() as srv:
        sdk = anthropic.Anthropic(api_key=KEY, base_url=srv.base_url, max_retries=0)
        for name, schema in schemas.items():
            assert schema_problem(schema) is not None, name
            with pytest.raises(anthropic.BadRequestError, match="not supported|additionalProperties"):
                sdk.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=[{"role": "user", "content": "x"}],
                                    output_config={"format": {"type": "json_schema", "schema": schema}})
    assert schema_problem({"type": "object", "properties": {}}) is not None  # no additionalProperties: false


@pytest.mark.parametrize("name", ["theme Exchange", "filter verdict"])
def test_anthropic_json_mode_sends_the_schema_the_api_accepts(tmp_path, monkeypatch, name):
    from tests.support.fakeapi.anthropic_api import schema_problem

    schema = _real_schemas()[name]
    with serve_anthropic() as srv:
        result = client("anthropic", srv.base_url, tmp_path, monkeypatch, max_attempts=1).complete(
            ask(json_schema=schema))
        sent = srv.requests[-1]["body"]["output_config"]["format"]["schema"]
    assert result.ok, result.error
    assert schema_problem(sent) is None and sent["additionalProperties"] is False
    assert set(result.parsed) >= set(schema["required"])


# ------------------------------------------------------------------ 3. OpenAI parameters
def test_openai_reasoning_models_get_max_completion_tokens_and_no_temperature(tmp_path, monkeypatch):
    with serve_openai_compat() as srv:
        c = client("openai", srv.base_url, tmp_path, monkeypatch, max_attempts=1)
        default = c.complete(ask(temperature=0.3))  # gpt-5.4-mini: a reasoning model
        o4 = c.complete(ask("b", model="o4-mini", temperature=0.3))
        plain = c.complete(ask("c", model="local-llama", temperature=0.3))
        bodies = [r["body"] for r in srv.requests]
    assert default.ok and o4.ok and plain.ok, (default.error, o4.error, plain.error)
    assert bodies[0]["model"] == "gpt-5.4-mini" and bodies[0]["max_completion_tokens"] == 64
    assert "max_tokens" not in bodies[0] and "temperature" not in bodies[0]
    assert "max_tokens" not in bodies[1] and "temperature" not in bodies[1]
    # another server's own model: max_tokens, the field every OpenAI-compatible server reads
    assert bodies[2]["max_tokens"] == 64 and bodies[2]["temperature"] == 0.3 and "max_completion_tokens" not in bodies[2]


def test_openai_refusals_of_unknown_models_are_learned_once(tmp_path, monkeypatch):
    with serve_openai_compat(reasoning_models=("house-reasoner",)) as srv:
        c = client("openai", srv.base_url, tmp_path, monkeypatch, max_attempts=1)
        first = c.complete(ask(model="house-reasoner", temperature=0.3))
        second = c.complete(ask("again", model="house-reasoner", temperature=0.3))
        sent = [(sorted(k for k in r["body"] if k in ("max_tokens", "max_completion_tokens", "temperature")))
                for r in srv.requests]
    assert first.ok and second.ok and first.attempts == 1
    assert sent == [["max_tokens", "temperature"], ["max_completion_tokens", "temperature"],
                    ["max_completion_tokens"], ["max_completion_tokens"]]


def test_openai_itself_gets_max_completion_tokens_for_every_model(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAIProvider().sampling("gpt-4o-mini", 0.5, 10) == {"max_completion_tokens": 10, "temperature": 0.5}
    assert OpenAIProvider(base_url="https://api.openai.com/v1").sampling("gpt-5.4", 0.5, 10) == {
        "max_completion_tokens": 10}
    assert OpenAIProvider(base_url="http://localhost:1234/v1").sampling("qwen", 0.5, 10) == {
        "max_tokens": 10, "temperature": 0.5}


# ------------------------------------------------------------------ 4. fal: no retries of its own, one bill
FAL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest, LLMSettings
    from distillery_assets.llm.settings import build_provider
    timeout_s, attempts = float(sys.argv[1]), int(sys.argv[2])
    provider = build_provider(LLMSettings(provider="fal", timeout_s=timeout_s))
    provider.poll_interval_s = 0.02
    client = LLMClient(provider, cache_dir=None, timeout_s=timeout_s, backoff_initial_s=0.01, max_attempts=attempts,
                       sleep=lambda s: None)
    started = time.monotonic()
    result = client.complete(LLMRequest(messages=[ChatMessage(role="user", content="hi")], max_tokens=32))
    print(json.dumps({"ok": result.ok, "error": result.error, "seconds": time.monotonic() - started}))
""")


def _fal(srv, tmp_path, timeout_s: float, attempts: int) -> dict:
    env = {**os.environ, **srv.client_env(), "FAL_KEY": "fal-id:secret", "DISTILLERY_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", FAL_SCRIPT, str(timeout_s), str(attempts)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _submits(srv) -> int:
    return sum(1 for r in srv.requests if r["method"] == "POST")


def test_fal_a_submit_answered_too_late_is_sent_once_billed_once_and_the_deadline_holds(tmp_path):
    with serve_fal_queue(slow_submits=[3.0]) as srv:
        out = _fal(srv, tmp_path, timeout_s=0.6, attempts=3)
        submits, jobs = _submits(srv), len(srv.jobs)
    assert not out["ok"] and "may have been queued" in out["error"]
    assert submits == 1 and jobs == 1  # fal-client did not post it again, and neither did the client
    assert out["seconds"] < 2.5  # one 0.6 s limit (plus start-up), not fal-client's ten


def test_fal_a_refused_submit_is_retried_by_the_client_not_by_fal_client(tmp_path):
    with serve_fal_queue(script=[("429", 0)]) as srv:
        once = _fal(srv, tmp_path, timeout_s=5.0, attempts=1)
        assert _submits(srv) == 1 and len(srv.jobs) == 0  # fal-client sent it once; nothing was queued
    assert not once["ok"] and "429" in once["error"]
    with serve_fal_queue(script=[("429", 0)]) as srv:
        twice = _fal(srv, tmp_path, timeout_s=5.0, attempts=2)
        assert _submits(srv) == 2 and len(srv.jobs) == 1  # retried by the client's policy: one request billed
    assert twice["ok"]


def test_fal_a_request_stuck_in_the_queue_is_cancelled_at_the_deadline(tmp_path):
    with serve_fal_queue(script=[("timeout", 5.0)]) as srv:
        out = _fal(srv, tmp_path, timeout_s=1.5, attempts=1)
        cancels = [r for r in srv.requests if r["method"] == "PUT"]
        [job] = srv.jobs.values()
        headers = srv.requests[0]["headers"]
    assert not out["ok"] and "timeout" in out["error"] and out["seconds"] < 4.0
    assert len(cancels) == 1 and job["cancelled"]
    assert headers.get("x-fal-request-timeout") == "1.5"  # the queue drops it too, if the cancel is lost
