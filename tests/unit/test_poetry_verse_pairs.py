"""Poet pairs grounded in real verse (issue 10, item 6): the shipped public-domain poems, the brief the LLM
writes for each, and the dataset gate that keeps prose out of the poet's training targets."""

import itertools
from dataclasses import dataclass

import dagster as dg

from assets import poetry
from distillery_assets.io import read_jsonl
from distillery_assets.llm.task import Reject
from distillery_assets.paths import config_dir, inputs_dir
from distillery_assets.poetry import tasks
from distillery_assets.poetry.datasets import gate_for
from distillery_assets.poetry.raw_poems import Poem, load_poems
from distillery_assets.poetry.settings import PoetryConfig
from distillery_assets.poetry.verse import verse_verdict
from tests.support.llm import scripted_llm

PROSE = ("The poem captures the feeling of winter light falling through a window and the way it makes the room "
         "feel both warm and cold at once, which is what the brief asked for.")
VERSE = "Salt on the sill,\nthe kettle ticking,\nfrost in the hinge,\na spoon left to cool."


@dataclass
class R:
    ok: bool = True
    text: str | None = None
    error: str | None = None
    finish_reason: str | None = "stop"


def test_shipped_verse_is_verse_and_shares_nothing_with_good_poems_or_the_heldout_text():
    verse, rejects = load_poems(inputs_dir() / "poetry", "verse")
    good, _ = load_poems(inputs_dir() / "poetry", "good")
    assert len(verse) >= 40 and rejects == []
    assert all(verse_verdict(p.text).verse for p in verse)
    assert not {p.text for p in verse} & {p.text for p in good}
    assert not {p.source.split("/")[-1] for p in verse} & {p.source.split("/")[-1] for p in good}
    heldout = (config_dir() / "training" / "heldout" / "poetry_teaching.txt").read_text(encoding="utf-8")
    for poem in verse:  # not a line of any poet target is in the held-out perplexity text
        assert not any(len(line) > 12 and line.strip() in heldout for line in poem.text.splitlines()), poem.source


def test_verse_briefs_ask_the_educator_about_the_poem_and_keep_the_poem_as_target():
    cfg = PoetryConfig()
    poems = [Poem(id=f"verse:verse/{i}.txt", text=VERSE + f"\nline {i}", source=f"verse/{i}.txt", quality="verse")
             for i in range(3)]
    task, rows = tasks.verse_briefs(cfg, poems, 2)
    assert [r.key for r in rows] == ["verse:verse/0.txt", "verse:verse/1.txt"]
    request = task.request(rows[0])
    assert request.messages[0].content == tasks.educator_system(cfg) and poems[0].text in request.messages[-1].content
    assert request.max_tokens == (cfg.pipeline.volumes.verse_brief_max_tokens or cfg.pipeline.volumes.max_tokens)
    rec = task.parse(rows[0], R(text="Write about a kitchen at dawn, in short lines, ending on a cooling spoon."))
    assert rec == {"poem": poems[0].text, "source": "verse/0.txt", "origin": "verse",
                   "brief": "Write about a kitchen at dawn, in short lines, ending on a cooling spoon."}
    echoed = task.parse(rows[0], R(text=poems[0].text))
    assert isinstance(echoed, Reject) and "repeats the poem" in echoed.reason
    assert tasks.verse_briefs(cfg, poems, 0)[1] == []


def test_the_dataset_gate_rejects_prose_poet_pairs_with_a_reason():
    gate = gate_for(PoetryConfig())
    prose, verse = {"brief": "b", "poem": PROSE}, {"brief": "b", "poem": VERSE}
    assert gate.check("poet_pair", prose) == []  # the generic rules alone let prose through
    assert gate.shape("poet_pair", prose)[0].startswith("not_verse: ")
    assert gate.shape("poet_pair", verse) == [] and gate.shape("brief", {"brief": PROSE}) == []
    passed, rejected = gate.split("poet_pair", [prose, verse], verse=True)
    assert passed == [verse] and rejected[0]["_reject_reasons"][0].startswith("not_verse")


def poet_llm():
    """The real LLM resource over a scripted provider: briefs and verse briefs come back as prose; the LLM's own
    poems (asked with the poet's system prompt) come back as prose too."""
    numbers = itertools.count()

    def reply(messages, **_):
        if messages[0].content == PoetryConfig().poet_system:
            return PROSE
        return f"Write about what the poem sees, in short lines, turning at the end ({next(numbers)})."

    return scripted_llm(reply)


def test_poet_training_targets_are_verse_from_the_shipped_poems(data_dir):
    result = dg.materialize([poetry.poetry_briefs, poetry.poetry_poet_pairs, poetry.tutor_feedback, poetry.poet_dataset],
                            resources={"llm": poet_llm()})
    assert result.success
    cfg = PoetryConfig()
    pairs = read_jsonl(data_dir / "poetry" / "generated" / "poet_pair.jsonl")
    grounded = [p for p in pairs if p.get("origin") == "verse"]
    assert len(grounded) == cfg.pipeline.volumes.verse_pairs
    examples = [ex for side in ("train", "valid")
                for ex in read_jsonl(data_dir / "poetry" / "datasets" / "poet" / f"{side}.jsonl")]
    targets = [ex["messages"][-1]["content"] for ex in examples]
    assert len(examples) == len(grounded) and all(verse_verdict(t).verse for t in targets)
    assert set(targets) == {p["poem"] for p in grounded}
    gate_log = read_jsonl(data_dir / "poetry" / "rejects" / "quality_gate_poet.jsonl")
    assert len(gate_log) == cfg.pipeline.volumes.poet_pairs
    assert all(r["_reject_reasons"][0].startswith("not_verse") for r in gate_log)


def test_poet_pair_sources_are_the_verse_files_up_to_the_last_poem_used(tmp_path, monkeypatch):
    from distillery_assets.poetry import sources
    from distillery_assets.poetry.raw_poems import poem_files

    cfg = PoetryConfig()
    n = cfg.pipeline.volumes.verse_pairs
    shipped = poem_files(inputs_dir() / "poetry", "verse")
    assert 0 < n < len(shipped)  # the default profile uses some of the shipped poems, not all
    read = sources.step_sources(cfg, "poet_pair")
    assert [p for p in read if p.parent.name == "verse"] == shipped[:n]
    assert cfg.file("poet_system.txt") in read and cfg.file("pipeline.yaml") in read

    verse = tmp_path / "poetry" / "verse"
    verse.mkdir(parents=True)
    (verse / "a.txt").write_bytes(b"\xff\xfe not text")  # unreadable: a reject, yet it decides what comes first
    (verse / "b.txt").write_text(VERSE)
    (verse / "c.txt").write_text(VERSE.replace("spoon", "knife"))
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(tmp_path))
    poems, rejects = load_poems(tmp_path / "poetry", "verse")
    assert [p.source for p in poems] == ["verse/b.txt", "verse/c.txt"] and len(rejects) == 1
    assert sources._verse_files_read(1) == [verse / "a.txt", verse / "b.txt"]
    assert sources._verse_files_read(2) == sources._verse_files_read(5) == [verse / name for name in ("a.txt", "b.txt", "c.txt")]
    assert sources._verse_files_read(0) == []
