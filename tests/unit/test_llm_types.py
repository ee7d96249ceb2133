import pytest
from pydantic import ValidationError

from distillery_assets.llm import ChatMessage, LLMRequest


def req(**kw):
    base = dict(messages=[ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")])
    base.update(kw)
    return LLMRequest(**base)


def test_key_is_stable_sha256_and_ignores_tag():
    a, b = req(tag="story_corpus"), req(tag="poetry")
    assert a.key("openai", "m") == b.key("openai", "m")
    assert len(a.key("openai", "m")) == 64


@pytest.mark.parametrize("change", [
    dict(temperature=0.1), dict(max_tokens=7), dict(json_schema={"type": "object"}), dict(stop=["\n"]),
    dict(seed=3), dict(messages=[ChatMessage(role="user", content="u")]),
    dict(messages=[ChatMessage(role="user", content="s"), ChatMessage(role="system", content="u")]),
])
def test_every_answer_changing_field_changes_the_key(change):
    assert req().key("openai", "m") != req(**change).key("openai", "m")


def test_provider_and_model_are_part_of_the_key():
    keys = {req().key("openai", "m"), req().key("anthropic", "m"), req().key("openai", "m2")}
    assert len(keys) == 3


def test_request_needs_a_user_message_and_sane_numbers():
    with pytest.raises(ValidationError, match="user message"):
        LLMRequest(messages=[ChatMessage(role="system", content="only system")])
    with pytest.raises(ValidationError):
        req(max_tokens=0)
    with pytest.raises(ValidationError):
        ChatMessage(role="tool", content="x")
