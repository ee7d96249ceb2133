from dataclasses import dataclass

import pytest

from distillery_assets.poetry import tasks
from distillery_assets.poetry.raw_poems import Poem
from distillery_assets.poetry.settings import PoetryConfig


@dataclass
class R:
    ok: bool
    text: str | None = None
    error: str | None = None
    finish_reason: str | None = "stop"


def _poems(q, n):
    return [Poem(id=f"{q}:{i}", text=f"{q} poem {i} {{braces}}", source=f"{q}/{i}.txt", quality=q) for i in range(n)]


def test_render_fills_literally_and_names_unknown_placeholders():
    assert tasks.render("A {poem} B", poem="{x} {y}") == "A {x} {y} B"
    with pytest.raises(tasks.PromptError, match=r"t1: unknown placeholder \{draft\}"):
        tasks.render("{draft}", name="t1", poem="p")


def test_critique_specs_alternate_good_and_bad_and_carry_persona(monkeypatch):
    cfg = PoetryConfig()
    specs = tasks.critique_specs(cfg, _poems("good", 3), _poems("bad", 1), n=4)
    assert [s.key for s in specs] == ["good:0", "bad:0", "good:1", "good:2"]
    assert "{braces}" in specs[0].user  # poem text inserted literally
    # small profile: the condensed persona alone (a 135M model parrots long system prompts)
    assert specs[0].system == cfg.persona_condensed
    assert specs[0].messages()[0]["role"] == "system" and specs[0].max_tokens == cfg.pipeline.volumes.max_tokens
    monkeypatch.setenv("DISTILLERY_POETRY_PROFILE", "full")
    full = tasks.critique_specs(PoetryConfig(), _poems("good", 1), [], n=1)[0]
    assert full.system.startswith(cfg.persona[:40]) and "delve into" in full.system and full.max_tokens == 1024


def test_comparisons_alternate_which_side_is_good():
    specs = tasks.comparison_specs(PoetryConfig(), _poems("good", 2), _poems("bad", 2), n=0)
    assert [s.payload["poem_a"]["quality"] for s in specs] == ["good", "bad"]


def test_collect_turns_failures_and_empties_into_rejects_never_records():
    specs = tasks.brief_specs(PoetryConfig(), ["r1", "r2", "r3", "r4"], n=0)
    out = tasks.collect(specs, [R(True, " a brief "), R(False, error="rate limited after 5 retries"),
                                R(True, "   "), R(True, "cut", finish_reason="length")], "brief")
    assert out.records == [{"user_request": "r1", "brief": "a brief"}, {"user_request": "r4", "brief": "cut"}]
    assert [r.reason for r in out.rejects] == ["llm call failed: rate limited after 5 retries",
                                               "empty brief in the response"]
    assert "r2" in out.rejects[0].source and out.truncated == 1
    with pytest.raises(ValueError, match="keep order"):
        tasks.collect(specs, [R(True, "x")], "brief")


def test_poem_text_loses_code_fences_and_bad_poems_become_poems():
    cfg = PoetryConfig()
    specs = tasks.bad_poem_specs(cfg, 2)
    assert specs[0].system is None and specs[0].max_tokens == cfg.pipeline.volumes.poem_max_tokens
    out = tasks.collect(specs, [R(True, "```\nmy heart\n```"), R(True, "tears like rain")], "text", poem=True)
    poems = tasks.bad_poems_from(out)
    assert [p.text for p in poems] == ["my heart", "tears like rain"]
    assert poems[0].quality == "bad" and poems[0].id == "bad:generated/001"


def test_dialogue_and_poet_pair_specs_use_upstream_records():
    cfg = PoetryConfig()
    crit = [{"poem": {"id": "good:1", "text": "P"}, "critique": "C"}]
    rev = tasks.revision_specs(cfg, crit, n=5)
    assert rev[0].system is None and "P" in rev[0].user and "C" in rev[0].user
    fu = tasks.follow_up_specs(cfg, [{**crit[0], "revision": "P2"}])
    assert "P2" in fu[0].user and fu[0].payload["revision"] == "P2"
    pairs = tasks.poet_pair_specs(cfg, [{"user_request": "u", "brief": "B"}], n=0)
    assert pairs[0].user == "B" and pairs[0].system == cfg.poet_system
