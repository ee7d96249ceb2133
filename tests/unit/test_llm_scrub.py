"""A planted key must not reach any result, usage row, log line or resource config."""

import logging

from tests.support.fakeapi import serve_openai_compat
from distillery_assets.llm import ChatMessage, LLMRequest, LLMSettings, build_client
from distillery_assets.llm.errors import ProviderError, RetryableError
from distillery_assets.llm.providers.scripted import ScriptedProvider
from distillery_assets.llm.scrub import Scrubber

KEY = "sk-test-PLANTED-123"


def ask(text="hi"):
    return LLMRequest(messages=[ChatMessage(role="user", content=text)], max_tokens=8)


def test_scrubber_redacts_env_values_and_key_shapes(monkeypatch):
    monkeypatch.setenv("WEIRD_KEY_VAR", "zz-PLANTED-custom-999")
    scrub = Scrubber(["WEIRD_KEY_VAR"])
    text = scrub("a zz-PLANTED-custom-999 b sk-abcdef123456 Authorization: Bearer tok_PLANTED_42xyz "
                 "Key fal1234:secret99 x-api-key: PLANTEDvalue7 api_key='PLANTED8'")
    assert "PLANTED" not in text and "sk-abcdef" not in text and "secret99" not in text
    assert scrub("the key considerations are clear") == "the key considerations are clear"


def test_planted_key_never_leaves_the_client(data_dir, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = ScriptedProvider([
        RetryableError(f"HTTP 503 while calling with Authorization: Bearer {KEY}"),
        ProviderError(f"HTTP 401: invalid api key {KEY} (header x-api-key: {KEY})"),
        RetryableError(f"connection reset; key={KEY}"),
        RetryableError(f"connection reset; key={KEY}"),
    ])
    rows = []
    client = build_client(LLMSettings(provider="openai", max_attempts=2, backoff_s=0.0), usage_sink=rows.extend,
                          provider=provider)
    with caplog.at_level(logging.DEBUG):
        results = [client.complete(ask("a")), client.complete(ask("b"))]
    assert all(not r.ok for r in results)
    everything = " ".join([caplog.text, repr(rows), *(r.model_dump_json() for r in results)])
    assert "HTTP 401" in everything and "connection reset" in everything  # the reasons survive
    assert "PLANTED" not in everything


def test_real_sdk_failures_and_resource_config_hold_no_key(data_dir, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    rows = []
    with serve_openai_compat(script=[("500",), ("500",)]) as srv:
        client = build_client(LLMSettings(provider="openai", base_url=srv.base_url, max_attempts=2, backoff_s=0.0),
                              usage_sink=rows.extend)
        with caplog.at_level(logging.DEBUG):
            result = client.complete(ask())
        assert srv.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"  # it was really sent
    assert not result.ok and "HTTP 500" in result.error
    assert "PLANTED" not in caplog.text + repr(rows) + result.model_dump_json()

    from resources.llm import LLMResource

    resource = LLMResource.from_env()
    assert "PLANTED" not in repr(resource) and "PLANTED" not in str(resource.settings().model_dump())
