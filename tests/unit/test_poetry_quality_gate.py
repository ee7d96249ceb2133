import pytest

from distillery_assets.poetry.quality_gate import reason_counts
from distillery_assets.poetry.datasets import gate_for
from distillery_assets.poetry.settings import PoetryConfig

LONG = "The second stanza turns on a plain verb, and the ending holds its nerve without a moral."


@pytest.fixture
def gate():
    return gate_for(PoetryConfig())


def test_each_task_is_judged_on_its_own_field(gate):
    # the seed rejected every brief and autopsy as "empty response"; here each uses its own field
    assert gate.check("brief", {"user_request": "x", "brief": LONG}) == []
    assert gate.check("autopsy", {"autopsy": 'The phrase "heart of gold" has gone dead. ' + LONG}) == []
    assert gate.check("poet_pair", {"brief": "b", "poem": "Salt on the sill,\nthe kettle ticking its small clock."}) == []
    assert gate.check("lesson", {"lesson": LONG}) == []
    assert gate.check("brief", {"brief": ""})[0].startswith("empty")


def test_banned_phrases_voice_rubric_and_specificity(gate):
    reasons = gate.check("critique", {"critique": "Great job! Let us delve into it. 7/10\n- bullet point here " + LONG})
    tags = [r.split(":")[0] for r in reasons]
    assert "llm_ism" in tags and "voice_break" in tags and "anti_rubric" in tags
    assert "specificity" in tags  # no line number or quoted phrase
    assert gate.check("critique", {"critique": "In line 3 the verb works. " + LONG}) == []
    assert gate.check("critique", {"critique": 'I love "the kettle ticks" here. ' + LONG}) == []


def test_poems_are_not_held_to_rubric_rules_and_split_keeps_reasons(gate):
    # a poem may contain "1/2" or a dash at line start; only educator text is held to anti-rubric rules
    assert gate.check("poet_pair", {"poem": "- half past one,\n1/2 of the moon, a kettle cooling on the stove"}) == []
    passed, rejected = gate.split("lesson", [{"lesson": LONG}, {"lesson": "short"}])
    assert passed == [{"lesson": LONG}]
    assert rejected[0]["_task"] == "lesson" and rejected[0]["_reject_reasons"][0].startswith("too_short")
    assert reason_counts(rejected) == {"too_short": 1}
    with pytest.raises(KeyError):
        gate.check("haiku", {})
