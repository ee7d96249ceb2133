"""Answers from the server that gave them: the cache key names the endpoint when it is not the provider's default
(two servers serving one model name never share answers), and answers cached for the default keep their keys."""

import json

from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest, LLMSettings
from distillery_assets.llm.providers.base import endpoint_of
from distillery_assets.llm.settings import build_provider
from distillery_assets.llm.task import LLMTask, run_task
from tests.support.fakeapi import serve_openai_compat


def ask(text="Name a colour.", **kw):
    return LLMRequest(messages=[ChatMessage(role="system", content="Be brief."),
                                ChatMessage(role="user", content=text)], max_tokens=64, **kw)


def provider(name, base_url=None):
    return build_provider(LLMSettings(provider=name, base_url=base_url, api_key_env="DISTILLERY_TEST_UNSET_KEY"))


def test_the_same_prompt_against_two_servers_with_one_model_name_gets_two_answers(tmp_path):
    cache = tmp_path / "cache"
    with serve_openai_compat(model="alias", reply=lambda m, b: "weights of server A") as a, \
            serve_openai_compat(model="alias", reply=lambda m, b: "weights of server B") as b:
        client_a = LLMClient(provider("openai", a.base_url), cache_dir=cache)
        client_b = LLMClient(provider("openai", b.base_url), cache_dir=cache)
        first_a, first_b = client_a.complete(ask(model="alias")), client_b.complete(ask(model="alias"))
        again_a, again_b = client_a.complete(ask(model="alias")), client_b.complete(ask(model="alias"))
        assert (a.request_count, b.request_count) == (1, 1)  # each server asked once, then its own cache entry
    assert (first_a.text, first_b.text) == ("weights of server A", "weights of server B")
    assert (again_a.text, again_b.text) == ("weights of server A", "weights of server B")
    assert again_a.cached and again_b.cached and first_a.request_key != first_b.request_key
    entries = [json.loads(p.read_text()) for p in cache.rglob("*.json")]
    assert sorted(e["endpoint"] for e in entries) == sorted([a.base_url, b.base_url])


def test_the_default_servers_keep_the_keys_answers_were_cached_under(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    # the keys of this request before endpoints were part of the key (computed with the previous types.py)
    before = {"openai": "3592a313a8194fe37a9be404c95aa0d5f3388c9d22cea2d81a5eb535e6dbc82d",
              "anthropic": "37f5b18f61af21e3e42ed85768fa980752d408b0a4b43b29a23647cff46d1589"}
    models = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}
    defaults = {"openai": [None, "https://api.openai.com/v1", "HTTPS://API.OPENAI.COM/v1/"],
                "anthropic": [None, "https://api.anthropic.com/"]}
    for name, urls in defaults.items():
        for url in urls:
            p = provider(name, url)
            assert endpoint_of(p) is None, (name, url)
            assert ask().key(name, models[name], endpoint_of(p)) == before[name]
    assert endpoint_of(provider("fal")) is None and endpoint_of(build_provider(LLMSettings())) is None


def test_endpoint_names_the_server_without_credentials_and_follows_the_sdk_variable(monkeypatch):
    assert endpoint_of(provider("openai", "http://user:secret@LocalHost:1234/v1/?x=1")) == "http://localhost:1234/v1"
    assert endpoint_of(provider("anthropic", "https://proxy.example/anthropic")) == "https://proxy.example/anthropic"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")  # what the SDK uses when none is given
    assert endpoint_of(provider("openai")) == "http://127.0.0.1:8000/v1"
    keys = {ask().key("openai", "m", endpoint_of(provider("openai", url)))
            for url in (None, "http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1")}
    assert len(keys) == 2  # the variable's server and the same URL given in settings are one server


class Colour(LLMTask[str]):
    name = "colour"

    def prompt(self, row):
        return ask(f"Name a colour for {row}.", model="alias")


def test_the_journal_records_the_key_of_the_server_asked(tmp_path):
    journal = tmp_path / "journal.jsonl"
    with serve_openai_compat(model="alias") as a, serve_openai_compat(model="alias") as b:
        client_a = LLMClient(provider("openai", a.base_url), cache_dir=tmp_path / "cache")
        run = run_task(Colour(), ["sea", "sky"], client_a, journal=journal)
        lines = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [l["request_key"] for l in lines] == [run.results[k].request_key for k in ("sea", "sky")]
        # another server: the journal's rows are not its answers, so they are asked there
        client_b = LLMClient(provider("openai", b.base_url), cache_dir=tmp_path / "cache")
        again = run_task(Colour(), ["sea", "sky"], client_b, journal=journal)
        assert again.resumed == 0 and b.request_count == 2
