"""Generating missing .corpus files through the LLM client (over a scripted provider): what is written, skipped,
failed, and resumed."""

import os

import pytest

from distillery_assets.corpus import generate as gen
from distillery_assets.corpus.plan import scan_partition
from distillery_assets.corpus.quality import inspect_corpus, word_stats
from distillery_assets.llm.errors import ProviderError
from distillery_assets.llm.providers.base import ProviderReply
from tests.support.llm import scripted_client


class Scripted:
    """The real LLM client over a scripted provider answering each prompt with prose about it (a prompt in
    ``fail_prompts`` fails at the provider, one in ``empty_prompts`` gets no text); keeps what the provider was
    asked (messages and settings), each finished batch as (label, size) and the usage rows."""

    def __init__(self, fail_prompts=(), empty_prompts=()):
        self.fail_prompts = set(fail_prompts)
        self.empty_prompts = set(empty_prompts)
        self.asked, self.batches, self.rows = [], [], []
        self.client = scripted_client(self.reply, batches=self.batches, rows=self.rows)

    def reply(self, messages, **settings):
        self.asked.append((messages, settings))
        prompt = messages[-1].content
        if prompt in self.fail_prompts:
            return ProviderError("HTTP 500 from provider")
        text = "" if prompt in self.empty_prompts else f"  Prose answering: {prompt}\n\n"
        return ProviderReply(text, "stop", 10, 20, cost_usd=0.001)

    @property
    def prompts_sent(self):
        return [messages[-1].content for messages, _ in self.asked]


def make_partition(root, n=6):
    leaf = root / "cat" / "sub"
    leaf.mkdir(parents=True)
    (leaf / "prompts.txt").write_text("".join(f"doc_{i}.corpus Prompt number {i}.\n" for i in range(n)))
    return root / "cat"


def test_requests_carry_fixed_system_prompt_and_settings(tmp_path):
    part = make_partition(tmp_path, 2)
    llm = Scripted()
    gen.generate_missing(scan_partition(part).pending, llm.client, model="qwen/qwen-2.5-72b-instruct", tag="encyclopedia_corpus", label="L")
    (label, size), = llm.batches
    assert label == "L" and size == 2 and len(llm.asked) == 2
    for messages, settings in llm.asked:
        assert [m.role for m in messages] == ["system", "user"]
        assert messages[0].content == gen.SYSTEM_PROMPT
        assert (settings["temperature"], settings["max_tokens"], settings["model"]) == (0.8, 4096, "qwen/qwen-2.5-72b-instruct")
    assert [(r["tag"], r["model"]) for r in llm.rows] == [("encyclopedia_corpus", "qwen/qwen-2.5-72b-instruct")] * 2


def test_writes_stripped_text_with_trailing_newline_and_skips_existing(tmp_path):
    part = make_partition(tmp_path, 4)
    (part / "sub" / "doc_1.corpus").write_text("already here\n")
    plan = scan_partition(part)
    llm = Scripted()
    report = gen.generate_missing(plan.pending, llm.client)
    assert [o.task.file for o in report.generated] == ["doc_0.corpus", "doc_2.corpus", "doc_3.corpus"]
    assert (part / "sub" / "doc_0.corpus").read_text() == "Prose answering: Prompt number 0.\n"
    assert (part / "sub" / "doc_1.corpus").read_text() == "already here\n"
    assert [size for _, size in llm.batches] == [3]  # one stream: no chunk boundary idles the slots
    assert report.totals() == {"requests": 3, "cache_hits": 0, "provider_calls": 3, "input_tokens": 30,
                               "output_tokens": 60,
                               "cost_usd": 0.003, "cost_unknown_for": 0, "failed": 0}


def test_failures_and_empty_answers_write_nothing_and_keep_reasons(tmp_path):
    part = make_partition(tmp_path, 3)
    llm = Scripted(fail_prompts={"Prompt number 0."}, empty_prompts={"Prompt number 2."})
    report = gen.generate_missing(scan_partition(part).pending, llm.client)
    assert [o.task.file for o in report.generated] == ["doc_1.corpus"]
    reasons = {o.task.file: o.reason for o in report.failed}
    assert reasons == {"doc_0.corpus": "provider error: HTTP 500 from provider", "doc_2.corpus": "the model returned no text"}
    assert sorted(p.name for p in (part / "sub").iterdir()) == ["doc_1.corpus", "prompts.txt"]


def test_killed_mid_batch_leaves_no_partial_file_and_resume_generates_exactly_the_rest(tmp_path, monkeypatch):
    part = make_partition(tmp_path, 6)
    real_replace = os.replace
    renames = []

    def dying_replace(src, dst):
        if len(renames) == 3:  # the 4th file's rename: the process "dies" after its bytes hit the temp file
            raise KeyboardInterrupt("killed")
        renames.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        gen.generate_missing(scan_partition(part).pending, Scripted().client)
    monkeypatch.setattr(os, "replace", real_replace)

    files = sorted(p.name for p in (part / "sub").iterdir())
    written = [name for name in files if name != "prompts.txt"]
    assert len(written) == 3 and len(files) == 4  # three complete files, no temp file, no partial fourth
    for name in written:
        assert inspect_corpus((part / "sub" / name).read_bytes())[1] == []
        assert (part / "sub" / name).read_text().endswith(".\n")

    llm = Scripted()
    report = gen.generate_missing(scan_partition(part).pending, llm.client)
    expected = sorted(f"Prompt number {i}." for i in range(6) if f"doc_{i}.corpus" not in written)
    assert sorted(llm.prompts_sent) == expected and len(expected) == 3
    assert len(report.generated) == 3
    assert scan_partition(part).pending == []


def test_file_appearing_during_run_is_kept(tmp_path):
    part = make_partition(tmp_path, 1)
    pending = scan_partition(part).pending
    (part / "sub" / "doc_0.corpus").write_text("written by another run\n")
    report = gen.generate_missing(pending, Scripted().client)
    assert report.outcomes[0].status == "skipped"
    assert (part / "sub" / "doc_0.corpus").read_text() == "written by another run\n"


def test_inspect_corpus_findings():
    assert inspect_corpus(b"")[1][0].message == "empty"
    assert inspect_corpus(b"  \n") == (0, [inspect_corpus(b"")[1][0]])
    words, findings = inspect_corpus(b"\xff\xfe bad", "1-5")
    assert findings[0].severity == "error" and "not UTF-8" in findings[0].message
    words, findings = inspect_corpus("Here is a story about a cat.\n\nThe cat sat.\n".encode(), "1-100")
    assert words == 10 and [f.message for f in findings] == ["meta commentary ('Here is')"]
    _, findings = inspect_corpus(b"# Title\n\nThe cat sat on the mat all day long.\n", "1-5")
    assert [f.message for f in findings] == ["markdown heading", "11 words, target 1-5"]
    _, findings = inspect_corpus(b"The cat sat. Here, in the corner, it slept.\n", "1-100")
    assert findings == []


def test_word_stats():
    assert word_stats([100, 300, 500], "200-400") == {
        "files": 3, "min": 100, "median": 300, "max": 500, "target": "200-400", "below": 1, "within": 1, "above": 1
    }
    assert word_stats([]) == {"files": 0}


def test_run_summary_counts_words_per_partition_against_target(tmp_path):
    from distillery_assets.corpus.summary import run_summary

    part = make_partition(tmp_path, 3)
    llm = Scripted(fail_prompts={"Prompt number 2."})
    report = gen.generate_missing(scan_partition(part).pending, llm.client)
    summary = run_summary(report, {"cat": scan_partition(part)}, {"cat": "4-5"}, tmp_path)
    assert (summary["generated"], summary["failed"], summary["still_missing"]) == (2, 1, 1)
    assert summary["failures"] == {"cat/sub/doc_2.corpus": "provider error: HTTP 500 from provider"}
    assert summary["words_per_file"]["cat"] == {"files": 2, "min": 5, "median": 5, "max": 5, "target": "4-5",
                                                "below": 0, "within": 2, "above": 0}
    assert summary["by_partition"] == [["cat", 2, 1, 2, "4-5"]]
    assert summary["preview"].startswith("**cat/sub/doc_0.corpus**\n\n> Prompt number 0.\n\nProse answering")


def test_an_answer_cut_off_at_max_tokens_is_a_named_failure_not_a_file_unless_accepted(tmp_path):
    from distillery_assets.llm import LLMClient
    from distillery_assets.llm.providers.base import ProviderReply
    from distillery_assets.llm.providers.scripted import ScriptedProvider

    def reply(messages, **_):
        cut = "Prompt number 1." in messages[-1].content
        return ProviderReply("Prose that stops mid" if cut else "A whole passage.", "length" if cut else "stop", 5, 5)

    part = make_partition(tmp_path / "corpus", 3)
    client = LLMClient(ScriptedProvider(default=reply), cache_dir=tmp_path / "cache")
    report = gen.generate_missing(scan_partition(part).pending, client)
    assert [o.task.file for o in report.generated] == ["doc_0.corpus", "doc_2.corpus"]
    (failed,) = report.failed
    assert failed.task.file == "doc_1.corpus" and "finish_reason=length" in failed.reason
    assert not (part / "sub" / "doc_1.corpus").exists()  # never a truncated document on disk
    assert report.usage["provider_calls"] == 4  # the cut-off one was asked again with a larger budget

    again = gen.generate_missing(scan_partition(part).pending, client, accept_truncated=True)
    (kept,) = again.generated
    assert kept.task.file == "doc_1.corpus" and kept.truncated
    assert (part / "sub" / "doc_1.corpus").read_text() == "Prose that stops mid\n"
