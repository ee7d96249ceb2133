"""ChatML generation with a deterministic fake LLM: persona sent, re-ask, rejects, checkpoint/resume."""

import hashlib
import json
from types import SimpleNamespace

import pytest

from distillery_assets.paths import repo_root
from distillery_assets.theme import config, keywords
from distillery_assets.theme.generate import ChatMLGenerator, GenerationInterrupted, GenerationSettings
from distillery_assets.theme.journal import ChunkJournal, JournalError
from distillery_assets.theme.validate import AnachronismMatcher, ExampleValidator

CFG = repo_root() / "data" / "config" / "theme"
SETS = keywords.load_keyword_sets(CFG / "theme_keywords.json")
COUNTER = keywords.KeywordCounter(SETS)


def chunks(n):
    return [{"chunk_id": f"5-{i}", "source_id": 5, "source_title": "Book Five",
             "text": f"Passage {i}: the collective of the colony argued about science and power. " * 6}
            for i in range(n)]


class FakeLLM:
    """Answers from the request's seed; every 7th request (by seed) a too-short reply; a few duplicates."""

    def __init__(self, fail_chunk=None, bad_json_first=False):
        self.calls = []
        self.fail_chunk = fail_chunk
        self.bad_json_first = bad_json_first

    def __call__(self, specs, label):
        out = []
        for spec in specs:
            self.calls.append(spec)
            system, user = spec.messages[0]["content"], spec.messages[1]["content"]
            if self.fail_chunk and f"Passage {self.fail_chunk}:" in user:
                out.append(SimpleNamespace(ok=False, text=None, parsed=None, error="connection refused", usage=None))
                continue
            if self.bad_json_first and len(spec.messages) == 2:
                out.append(SimpleNamespace(ok=False, text="Sure! {not json", parsed=None, error="invalid JSON",
                                           usage=SimpleNamespace(input_tokens=10, output_tokens=3)))
                continue
            h = hashlib.sha256(f"{spec.seed}".encode()).hexdigest()
            question = f"What does passage {h[:6]} teach about duty?" if int(h, 16) % 5 else "What is our duty?"
            answer = ("Comrade, the collective of the colony must weigh science and power as a chess player "
                      f"weighs each move; that is how we endure. ({h[:8]})") if int(h, 16) % 7 else "Too short."
            payload = {"user": question, "assistant": answer}
            out.append(SimpleNamespace(ok=True, text=json.dumps(payload), parsed=payload, error=None,
                                       usage=SimpleNamespace(input_tokens=100, output_tokens=40)))
        return out


def make(tmp_path, **settings):
    validator = ExampleValidator(keywords=COUNTER, anachronisms=AnachronismMatcher(["computer"]))
    return ChatMLGenerator(config.load_personas(CFG / "personas.yaml"),
                           config.load_lines(CFG / "query_themes.txt", "query theme"), validator,
                           GenerationSettings(**{"examples_per_chunk": 2, "batch_chunks": 3, **settings}),
                           journal_path=tmp_path / "journal.jsonl")


def test_persona_is_sent_and_stored(tmp_path):
    llm = FakeLLM()
    gen = make(tmp_path)
    selected, report = gen.run(chunks(15), llm)
    examples = gen.examples(selected)
    assert examples and report.examples_kept == len(examples)
    personas = {p.name: p.prompt for p in config.load_personas(CFG / "personas.yaml")}
    for ex in examples:
        meta = ex["metadata"]
        assert ex["messages"][0]["content"] == personas[meta["persona"]]
        assert meta["chunk_id"].startswith("5-") and meta["source_id"] == 5 and meta["source_title"] == "Book Five"
    for spec in llm.calls:
        assert any(p in spec.messages[0]["content"] for p in personas.values())  # the generator sees the persona
        assert spec.temperature == 0.8 and spec.json_schema["required"] == ["user", "assistant"]
    assert report.rejected["response_too_short"] + report.rejected["duplicate_question"] > 0
    assert sum(report.persona_counts.values()) == len(examples)


def test_passage_truncated(tmp_path):
    llm = FakeLLM()
    long_chunk = [{"chunk_id": "1-0", "source_id": 1, "source_title": "T", "text": "war and peace " * 400}]
    make(tmp_path, max_passage_chars=1500).run(long_chunk, llm)
    user = llm.calls[0].messages[1]["content"]
    assert ("war and peace " * 400)[:1500] in user and ("war and peace " * 400)[:1514] not in user


def test_interrupted_run_resumes_to_same_examples(tmp_path):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    sel, _ = (g := make(full_dir)).run(chunks(10), FakeLLM())
    expected = g.examples(sel)

    with pytest.raises(GenerationInterrupted):
        make(cut_dir).run(chunks(10), FakeLLM(), stop_after_chunks=4)
    assert len(ChunkJournal(cut_dir / "journal.jsonl").entries) == 4
    llm = FakeLLM()
    resumed = make(cut_dir)
    sel2, report = resumed.run(chunks(10), llm)
    got = resumed.examples(sel2)
    assert got == expected  # same examples, same order, none duplicated
    keys = [(e["metadata"]["chunk_id"], e["metadata"]["example_index"]) for e in got]
    assert len(keys) == len(set(keys))
    assert report.chunks_resumed == 4 and report.chunks_processed == 6
    assert {c.messages[1]["content"].split(":")[0] for c in llm.calls} == {f"SOURCE PASSAGE (from Book Five)"}
    assert not any("Passage 0:" in c.messages[1]["content"] for c in llm.calls)  # finished chunks not re-asked


def test_torn_last_line_is_redone(tmp_path):
    gen = make(tmp_path)
    sel, _ = gen.run(chunks(3), FakeLLM())
    expected = gen.examples(sel)
    path = tmp_path / "journal.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:25])  # killed in the middle of writing chunk 3
    again = make(tmp_path)
    assert again.journal.dropped_torn_line and len(again.journal.entries) == 2
    sel2, report = again.run(chunks(3), FakeLLM())
    assert again.examples(sel2) == expected and report.chunks_processed == 1


def test_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"chunk_id": "a", "examples": [], "rejects": [], "usage": [0, 0]}\nnot json\n{"chunk_id": "b"}\n')
    with pytest.raises(JournalError, match=r"journal.jsonl:2"):
        ChunkJournal(path)


def test_unanswered_chunk_is_not_checkpointed(tmp_path):
    gen = make(tmp_path)
    selected, report = gen.run(chunks(4), FakeLLM(fail_chunk=2))
    assert report.chunks_failed == 1 and "connection refused" in report.failures[0]
    assert set(gen.journal.entries) == {"5-0", "5-1", "5-3"}
    again = make(tmp_path)
    _, report2 = again.run(chunks(4), FakeLLM())
    assert report2.chunks_processed == 1 and set(again.journal.entries) == {"5-0", "5-1", "5-2", "5-3"}


def test_bounded_reask_after_invalid_json(tmp_path):
    llm = FakeLLM(bad_json_first=True)
    gen = make(tmp_path, max_reasks=1)
    sel, report = gen.run(chunks(2), llm)
    assert report.reasks == 4 and len(llm.calls) == 8
    reask = [c for c in llm.calls if len(c.messages) == 4][0]
    assert reask.messages[2] == {"role": "assistant", "content": "Sure! {not json"}
    assert "could not be used" in reask.messages[3]["content"]
    assert report.examples_kept > 0

    llm2 = FakeLLM(bad_json_first=True)
    gen2 = make(tmp_path / "noreask", max_reasks=0)
    _, report2 = gen2.run(chunks(2), llm2)
    assert len(llm2.calls) == 4 and report2.rejected["invalid_json"] == 4 and report2.examples_kept == 0


def test_short_chunks_skipped_and_max_chunks(tmp_path):
    data = chunks(5)
    data[1]["text"] = "tiny"
    gen = make(tmp_path)
    sel, report = gen.run(data, FakeLLM(), max_chunks=3)
    assert sel == ["5-0", "5-1", "5-2"] and report.chunks_too_short == 1
    assert not any(e["metadata"]["chunk_id"] == "5-1" for e in gen.examples(sel))


def test_journal_location_follows_the_setup(tmp_path):
    import shutil

    from distillery_assets.theme.setup import build_generator
    from distillery_assets.theme.validate import ValidatorSettings

    base = build_generator(CFG, tmp_path, GenerationSettings(batch_chunks=4)).journal.path
    assert build_generator(CFG, tmp_path, GenerationSettings(batch_chunks=1)).journal.path == base
    assert build_generator(CFG, tmp_path, GenerationSettings(examples_per_chunk=3)).journal.path != base
    assert build_generator(CFG, tmp_path, GenerationSettings(), ValidatorSettings(min_theme_keywords=1)).journal.path != base
    assert build_generator(CFG, tmp_path, GenerationSettings(), llm_target="openai|x").journal.path != base
    edited = tmp_path / "cfg"
    shutil.copytree(CFG, edited)
    with open(edited / "query_themes.txt", "a") as fh:
        fh.write("a brand new topic\n")
    assert build_generator(edited, tmp_path, GenerationSettings()).journal.path != base


def test_duplicate_memory_only_from_selected_chunks(tmp_path):
    class SameQuestion(FakeLLM):
        def __call__(self, specs, label):
            out = super().__call__(specs, label)
            for r in out:
                r.parsed = {**r.parsed, "user": "What is the one true question?"} if r.parsed else r.parsed
            return out

    data = chunks(3)
    make(tmp_path, examples_per_chunk=1).run(data[2:], SameQuestion())  # chunk 5-2 done first, on its own
    gen = make(tmp_path, examples_per_chunk=1)
    sel, report = gen.run(data[:2], SameQuestion())  # 5-2 is not selected now: its question must not count
    kept = gen.examples(sel)
    assert [e["metadata"]["chunk_id"] for e in kept] == ["5-0"]
    assert report.rejected["duplicate_question"] == 1  # 5-1 repeats 5-0, not 5-2
