import pytest

from distillery_assets.llm.errors import ProviderError
from distillery_assets.llm.providers.base import ProviderReply
from distillery_assets.llm.task import run_task
from distillery_assets.poetry import generate, tasks, text
from distillery_assets.poetry.raw_poems import Poem
from distillery_assets.poetry.settings import PoetryConfig
from tests.support.llm import scripted_client


def by_prompt(replies):
    """The real client over a scripted provider answering each request by the first key found in its prompt."""
    return scripted_client(lambda messages, **_: next(v for k, v in replies.items() if k in messages[-1].content))


def _specs(built):
    """(row, request) pairs of a task builder's output."""
    task, rows = built
    return [(row, task.request(row)) for row in rows]


def _poems(q, n):
    return [Poem(id=f"{q}:{i}", text=f"{q} poem {i} {{braces}}", source=f"{q}/{i}.txt", quality=q) for i in range(n)]


def test_render_fills_literally_and_names_unknown_placeholders():
    assert text.render("A {poem} B", poem="{x} {y}") == "A {x} {y} B"
    with pytest.raises(text.PromptError, match=r"t1: unknown placeholder \{draft\}"):
        text.render("{draft}", name="t1", poem="p")


def test_critique_specs_alternate_good_and_bad_and_carry_persona(monkeypatch):
    cfg = PoetryConfig()
    specs = _specs(tasks.critiques(cfg, _poems("good", 3), _poems("bad", 1), n=4))
    assert [row.key for row, _ in specs] == ["good:0", "bad:0", "good:1", "good:2"]
    assert "{braces}" in specs[0][1].messages[-1].content  # poem text inserted literally
    # small profile: the condensed persona alone (a 135M model parrots long system prompts)
    assert specs[0][1].messages[0].content == cfg.persona_condensed
    assert specs[0][1].messages[0].role == "system" and specs[0][1].max_tokens == cfg.pipeline.volumes.max_tokens
    monkeypatch.setenv("DISTILLERY_POETRY_PROFILE", "full")
    full = _specs(tasks.critiques(PoetryConfig(), _poems("good", 1), [], n=1))[0][1]
    system = full.messages[0].content
    assert system.startswith(cfg.persona[:40]) and "delve into" in system and full.max_tokens == 1024


def test_comparisons_alternate_which_side_is_good():
    specs = _specs(tasks.comparisons(PoetryConfig(), _poems("good", 2), _poems("bad", 2), n=0))
    assert [row.payload["poem_a"]["quality"] for row, _ in specs] == ["good", "bad"]


def test_collect_turns_failures_and_empties_into_rejects_never_records(data_dir):
    task, rows = tasks.briefs(PoetryConfig(), ["r1", "r2", "r3", "r4"], n=0)
    asked = task.request  # r4's reply is cut off at max_tokens: a record only where the request accepts that
    task.request = lambda row: asked(row).model_copy(update={"accept_truncated": True})
    client = by_prompt({'"r1"': " a brief ", '"r2"': ProviderError("rate limited after 5 retries"), '"r3"': "   ",
                        '"r4"': ProviderReply("cut", "length", 10, 5)})
    out = generate.ask("brief", task, rows, client)
    assert out.records == [{"user_request": "r1", "brief": "a brief"}, {"user_request": "r4", "brief": "cut"}]
    assert [r.reason for r in out.rejects] == ["llm call failed: provider error: rate limited after 5 retries",
                                               "empty brief in the response"]
    assert "r2" in out.rejects[0].source and out.truncated == 1
    # every row ends as a record, reject or failure: a crash inside the provider loses no row
    crashed = run_task(task, rows, scripted_client(lambda messages, **_: RuntimeError("sdk bug")))
    assert len(crashed.failures) == 4 and all("unexpected RuntimeError: sdk bug" in f.reason for f in crashed.failures)


def test_poem_text_loses_code_fences_and_bad_poems_become_poems(data_dir):
    cfg = PoetryConfig()
    task, rows = tasks.bad_poems(cfg, 2)
    request = task.request(rows[0])
    assert [m.role for m in request.messages] == ["user"] and request.max_tokens == cfg.pipeline.volumes.poem_max_tokens
    topics = [row.fields["topic"] for row in rows]
    out = generate.ask("bad_poems", task, rows, by_prompt({topics[0]: "```\nmy heart\n```", topics[1]: "tears like rain"}))
    poems = tasks.bad_poems_from(out.records)
    assert [p.text for p in poems] == ["my heart", "tears like rain"]
    assert poems[0].quality == "bad" and poems[0].id == "bad:generated/001"


def test_dialogue_and_poet_pair_specs_use_upstream_records():
    cfg = PoetryConfig()
    crit = [{"poem": {"id": "good:1", "text": "P"}, "critique": "C"}]
    (row, rev), = _specs(tasks.revisions(cfg, crit, n=5))
    assert [m.role for m in rev.messages] == ["user"] and "P" in rev.messages[-1].content and "C" in rev.messages[-1].content
    (row, fu), = _specs(tasks.follow_ups(cfg, [{**crit[0], "revision": "P2"}]))
    assert "P2" in fu.messages[-1].content and row.payload["revision"] == "P2"
    (row, pair), = _specs(tasks.poet_pairs(cfg, [{"user_request": "u", "brief": "B"}], n=0))
    assert pair.messages[-1].content == "B" and pair.messages[0].content == cfg.poet_system
