"""ChatML generation through the LLM task runner and a real LLMClient over a scripted provider: persona
sent, client-side re-ask, rejects, journal/resume, failures retried."""

import hashlib
import json

import pytest

from distillery_assets.llm import LLMClient
from distillery_assets.llm.errors import RetryableError
from distillery_assets.llm.providers.base import ProviderReply
from distillery_assets.llm.task import JournalError, TaskJournal
from distillery_assets.paths import repo_root
from distillery_assets.theme import config, keywords
from distillery_assets.theme.generate import ChatMLGenerator, GenerationSettings
from distillery_assets.theme.validate import AnachronismMatcher, ExampleValidator

CFG = repo_root() / "data" / "config" / "theme"
SETS = keywords.load_keyword_sets(CFG / "theme_keywords.json")
COUNTER = keywords.KeywordCounter(SETS)


def chunks(n):
    return [{"chunk_id": f"5-{i}", "source_id": 5, "source_title": "Book Five",
             "text": f"Passage {i}: the collective of the colony argued about science and power. " * 6}
            for i in range(n)]


class Call:
    """What the provider was asked (messages as role/content dicts, the sampling settings, the schema)."""

    def __init__(self, messages, **kw):
        self.messages = [{"role": m.role, "content": m.content} for m in messages]
        self.seed, self.temperature, self.json_schema = kw["seed"], kw["temperature"], kw["json_schema"]


class FakeLLM:
    """A provider answering from the request's seed; every 7th reply (by seed) too short; a few repeated
    questions. ``fail_chunk``: that passage's calls fail (connection refused); ``bad_json_first``: the first
    ask of every request gets a reply that is not JSON (the client re-asks)."""

    name = "fake"

    def __init__(self, fail_chunk=None, bad_json_first=False, question=None):
        self.calls = []
        self.fail_chunk, self.bad_json_first, self.question = fail_chunk, bad_json_first, question

    def model_id(self, model):
        return model or "fake-1"

    def call(self, messages, **kw):
        call = Call(messages, **kw)
        self.calls.append(call)
        user = call.messages[1]["content"]
        if self.fail_chunk is not None and f"Passage {self.fail_chunk}:" in user:
            raise RetryableError("connection refused")
        if self.bad_json_first and len(call.messages) == 2:
            return ProviderReply("Sure! {not json", "stop", 10, 3)
        h = hashlib.sha256(f"{call.seed}".encode()).hexdigest()
        question = self.question or (f"What does passage {h[:6]} teach about duty?" if int(h, 16) % 5
                                     else "What is our duty?")
        answer = ("Comrade, the collective of the colony must weigh science and power as a chess player "
                  f"weighs each move; that is how we endure. ({h[:8]})") if int(h, 16) % 7 else "Too short."
        return ProviderReply(json.dumps({"user": question, "assistant": answer}), "stop", 100, 40)


def client(provider, json_reasks=1, **kw):
    return LLMClient(provider, cache_dir=None, max_attempts=1, json_reasks=json_reasks, **kw)


def dies_after(gen, n):
    """``gen`` killed (as ``kill -9`` mid-run would leave it) once ``n`` finished rows are journalled: the real
    client is still answering when the next row's line would be written."""
    append, written = gen.journal.append, []

    def append_or_die(entry):
        if len(written) == n:
            raise KeyboardInterrupt("killed")
        written.append(entry["key"])
        append(entry)

    gen.journal.append = append_or_die
    return gen


def make(tmp_path, **settings):
    validator = ExampleValidator(keywords=COUNTER, anachronisms=AnachronismMatcher(["computer"]))
    return ChatMLGenerator(config.load_personas(CFG / "personas.yaml"),
                           config.load_lines(CFG / "query_themes.txt", "query theme"), validator,
                           GenerationSettings(**{"examples_per_chunk": 2, **settings}),
                           journal_path=tmp_path / "journal.jsonl")


def test_persona_is_sent_and_stored(tmp_path):
    llm = FakeLLM()
    gen = make(tmp_path)
    selected, report = gen.run(chunks(15), client(llm))
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
    make(tmp_path, max_passage_chars=1500).run(long_chunk, client(llm))
    user = llm.calls[0].messages[1]["content"]
    assert ("war and peace " * 400)[:1500] in user and ("war and peace " * 400)[:1514] not in user


def test_interrupted_run_resumes_to_same_examples(tmp_path):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    sel, _ = (g := make(full_dir)).run(chunks(10), client(FakeLLM()))
    expected = g.examples(sel)

    with pytest.raises(KeyboardInterrupt):
        dies_after(make(cut_dir), 8).run(chunks(10), client(FakeLLM(), concurrency=1))
    assert len(TaskJournal(cut_dir / "journal.jsonl").entries) == 8  # 4 chunks x 2 examples, each journalled
    llm = FakeLLM()
    resumed = make(cut_dir)
    sel2, report = resumed.run(chunks(10), client(llm))
    got = resumed.examples(sel2)
    assert got == expected  # same examples, same order, none duplicated
    keys = [(e["metadata"]["chunk_id"], e["metadata"]["example_index"]) for e in got]
    assert len(keys) == len(set(keys))
    assert report.chunks_resumed == 4 and report.chunks_processed == 6
    assert {c.messages[1]["content"].split(":")[0] for c in llm.calls} == {f"SOURCE PASSAGE (from Book Five)"}
    assert not any("Passage 0:" in c.messages[1]["content"] for c in llm.calls)  # finished chunks not re-asked


def test_torn_last_line_is_redone(tmp_path):
    gen = make(tmp_path)
    sel, _ = gen.run(chunks(3), client(FakeLLM()))
    expected = gen.examples(sel)
    path = tmp_path / "journal.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4]) + lines[4][:25])  # killed in the middle of writing chunk 3's first line
    again = make(tmp_path)
    assert again.journal.dropped_torn_line and len(again.journal.entries) == 4
    sel2, report = again.run(chunks(3), client(FakeLLM()))
    assert again.examples(sel2) == expected and report.chunks_processed == 1


def test_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"key": "a", "request_key": "r", "record": {}}\nnot json\n{"key": "b"}\n')
    with pytest.raises(JournalError, match=r"journal.jsonl:2"):
        TaskJournal(path)


def test_unanswered_chunk_is_not_checkpointed(tmp_path):
    gen = make(tmp_path)
    selected, report = gen.run(chunks(4), client(FakeLLM(fail_chunk=2)))
    assert report.chunks_failed == 1 and "connection refused" in report.failures[0]
    assert {k.split("#")[0] for k in gen.journal.entries} == {"5-0", "5-1", "5-3"}
    again = make(tmp_path)
    _, report2 = again.run(chunks(4), client(FakeLLM()))
    assert report2.chunks_processed == 1 and {k.split("#")[0] for k in again.journal.entries} == {"5-0", "5-1", "5-2", "5-3"}


def test_invalid_json_is_reasked_by_the_client_and_a_reply_never_valid_is_a_journalled_reject(tmp_path):
    llm = FakeLLM(bad_json_first=True)
    gen = make(tmp_path)
    sel, report = gen.run(chunks(2), client(llm, json_reasks=1))
    assert report.usage["provider_calls"] - report.usage["requests"] == 4 and len(llm.calls) == 8
    reask = [c for c in llm.calls if len(c.messages) == 4][0]
    assert reask.messages[2] == {"role": "assistant", "content": "Sure! {not json"}
    assert "could not be used" in reask.messages[3]["content"]
    assert report.examples_kept > 0

    llm2 = FakeLLM(bad_json_first=True)
    gen2 = make(tmp_path / "noreask")
    _, report2 = gen2.run(chunks(2), client(llm2, json_reasks=0))
    assert len(llm2.calls) == 4 and report2.rejected["invalid_json"] == 4 and report2.examples_kept == 0
    # a whole reply that never matched the schema is the model's answer: journalled, not asked again
    assert len(gen2.journal.entries) == 4 and report2.chunks_failed == 0
    llm3 = FakeLLM()
    make(tmp_path / "noreask").run(chunks(2), client(llm3))
    assert llm3.calls == []


def test_a_json_reply_cut_off_at_max_tokens_is_a_failure_asked_again_next_run(tmp_path):
    class CutOff(FakeLLM):
        def call(self, messages, **kw):
            reply = super().call(messages, **kw)
            return ProviderReply(reply.text[: len(reply.text) // 2], "length", 100, 400)

    gen = make(tmp_path)
    _, report = gen.run(chunks(2), client(CutOff(), length_retries=1))
    assert report.chunks_failed == 2 and report.examples_kept == 0 and not gen.journal.entries
    assert all("finish_reason=length" in f for f in report.failures)
    llm = FakeLLM()
    _, again = make(tmp_path).run(chunks(2), client(llm))
    assert again.chunks_processed == 2 and len(llm.calls) == 4  # exactly the failures asked again


def test_short_chunks_skipped_and_max_chunks(tmp_path):
    data = chunks(5)
    data[1]["text"] = "tiny"
    gen = make(tmp_path)
    sel, report = gen.run(data, client(FakeLLM()), max_chunks=3)
    assert sel == ["5-0", "5-1", "5-2"] and report.chunks_too_short == 1
    assert not any(e["metadata"]["chunk_id"] == "5-1" for e in gen.examples(sel))


def test_journal_location_follows_the_setup(tmp_path):
    import shutil

    from distillery_assets.theme.setup import build_generator
    from distillery_assets.theme.validate import ValidatorSettings

    base = build_generator(CFG, tmp_path, GenerationSettings()).journal.path
    assert build_generator(CFG, tmp_path, GenerationSettings()).journal.path == base
    assert build_generator(CFG, tmp_path, GenerationSettings(examples_per_chunk=3)).journal.path != base
    assert build_generator(CFG, tmp_path, GenerationSettings(), ValidatorSettings(min_theme_keywords=1)).journal.path != base
    assert build_generator(CFG, tmp_path, GenerationSettings(), llm_target="openai|x").journal.path != base
    edited = tmp_path / "cfg"
    shutil.copytree(CFG, edited)
    with open(edited / "query_themes.txt", "a") as fh:
        fh.write("a brand new topic\n")
    assert build_generator(edited, tmp_path, GenerationSettings()).journal.path != base


def test_duplicate_memory_only_from_selected_chunks(tmp_path):
    data = chunks(3)
    same = "What is the one true question?"
    make(tmp_path, examples_per_chunk=1).run(data[2:], client(FakeLLM(question=same)))  # 5-2 done first, alone
    gen = make(tmp_path, examples_per_chunk=1)
    sel, report = gen.run(data[:2], client(FakeLLM(question=same)))  # 5-2 is not selected now: it must not count
    kept = gen.examples(sel)
    assert [e["metadata"]["chunk_id"] for e in kept] == ["5-0"]
    assert report.rejected["duplicate_question"] == 1  # 5-1 repeats 5-0, not 5-2
