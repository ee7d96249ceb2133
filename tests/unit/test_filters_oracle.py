"""The oracle task: compression, the schema built from the dimensions, temperature 0.3, and every bad
answer a reject with its reason (none written as a score)."""

from __future__ import annotations

import json

import pytest

from distillery_assets.filters.config import load_filter
from distillery_assets.filters.oracle import (
    COMPRESSION_MARKER,
    OracleTask,
    compress,
    verdict_model,
    word_count,
)
from distillery_assets.llm.task import run_task
from tests.support.filters_defs import SHIPPED, oracle_client

EDU = SHIPPED / "educational_value" / "v1"
GOOD = {"knowledge_depth": 8, "clarity": 7, "coherence": 9, "teaching_devices": 6, "reliability": 7,
        "audience_fit": 8, "content_type": "other"}


def test_compress_keeps_70_percent_head_marker_30_percent_tail():
    words = [f"w{i}" for i in range(2000)]
    text = "\n\n".join(" ".join(words[i:i + 100]) for i in range(0, 2000, 100))
    out = compress(text, 800)
    head, tail = out.split(COMPRESSION_MARKER)
    assert head.split() == words[:560] and tail.split() == words[-240:]
    assert word_count(out) - word_count(COMPRESSION_MARKER) == 800
    assert "\n\n" in head  # paragraph breaks inside the kept parts survive
    assert compress("short text here", 800) == "short text here"
    exact = " ".join(words[:800])
    assert compress(exact, 800) == exact
    assert word_count(compress(" ".join(words), 10, 0.7)) - word_count(COMPRESSION_MARKER) == 10


def test_verdict_schema_is_built_from_the_dimensions():
    d = load_filter(EDU)
    schema = verdict_model(d).model_json_schema()
    assert set(schema["required"]) == {*d.dimensions, "content_type"}
    for dim in d.dimensions:
        assert schema["properties"][dim]["type"] == "integer"
        assert (schema["properties"][dim]["minimum"], schema["properties"][dim]["maximum"]) == (0, 10)
    assert set(schema["properties"]["content_type"]["enum"]) == {"advertising", "fiction", "other"}
    no_caps = verdict_model(load_filter(SHIPPED / "deep_red_theme" / "v1")).model_json_schema()
    assert "content_type" not in no_caps["properties"]


def test_request_carries_schema_temperature_and_compressed_text():
    d = load_filter(EDU)
    task = OracleTask(d)
    doc = {"id": "a", "title": "Cells", "content": " ".join(["cell"] * 3000), "source": "encyclopedia",
           "published_date": ""}
    req = task.request(doc)
    assert req.temperature == 0.3 and req.json_schema == verdict_model(d).model_json_schema()
    body = req.messages[0].content
    assert "Cells" in body and COMPRESSION_MARKER in body and body.count("cell") <= 801
    assert "knowledge_depth (weight 0.25)" in body and body.rstrip().endswith('and "content_type".')
    assert task.request(doc) == req  # deterministic: the cache key is stable across runs


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from llama_cpp import Llama

    from distillery_assets.embedded import smollm2_gguf_path

    llm = Llama(model_path=str(smollm2_gguf_path()), vocab_only=True, verbose=False)
    return lambda text: len(llm.tokenize(text.encode("utf-8")))


@pytest.mark.parametrize("folder", ["educational_value/v1", "deep_red_theme/v1", "deep_red_theme/v2"])
def test_prompt_with_800_words_fits_smollm2_context(folder, smollm2_tokenizer):
    """Measured with SmolLM2's own tokenizer on book prose: prompt + schema (sent as text to providers
    without a schema mode) + the answer budget stay inside the local provider's default n_ctx."""
    from distillery_assets.llm.settings import LLMSettings
    from distillery_assets.paths import repo_root

    book = (repo_root() / "data" / "inputs" / "gutenberg" / "pg62.txt").read_text(encoding="utf-8")[20000:90000]
    task = OracleTask(load_filter(SHIPPED / folder))
    req = task.request({"id": "x", "title": "A Princess of Mars", "content": book})
    assert COMPRESSION_MARKER in req.messages[0].content
    used = smollm2_tokenizer(req.messages[0].content) + smollm2_tokenizer(json.dumps(req.json_schema))
    n_ctx = LLMSettings.model_fields["n_ctx"].default
    assert used + req.max_tokens < 0.75 * n_ctx, (used, n_ctx)


def _run(replies: dict[str, str], journal=None):
    d = load_filter(EDU)
    docs = [{"id": k, "title": k, "content": f"text of {k} " * 30} for k in replies]
    client = oracle_client(lambda messages, **_: next(v for k, v in replies.items() if f"Title: {k}\n" in messages[0].content))
    return run_task(OracleTask(d), docs, client, journal=journal), client


def test_bad_answers_are_rejects_with_reasons_and_good_ones_records(tmp_path):
    replies = {
        "good": json.dumps(GOOD),
        "prose": "I think this is quite educational, maybe a 7.",
        "missing": json.dumps({k: v for k, v in GOOD.items() if k != "clarity"}),
        "range": json.dumps({**GOOD, "coherence": 11}),
        "capped": json.dumps({**GOOD, "content_type": "fiction", "knowledge_depth": 5}),
    }
    run, _ = _run(replies, journal=tmp_path / "journal.jsonl")
    assert run.keys == ["good", "capped"]
    rejects = {r.key: r for r in run.rejects}
    assert set(rejects) == {"prose", "missing", "range"} and not run.failures
    assert all(r.reason == "invalid_json" for r in rejects.values())  # the schema check (after re-asks)
    assert "clarity" in rejects["missing"].detail and "coherence" in rejects["range"].detail
    good = run.records[0]
    assert good["scores"] == {k: float(v) for k, v in GOOD.items() if k != "content_type"}
    assert good["overall"] == pytest.approx(0.25 * 8 + 0.2 * 7 + 0.15 * 9 + 0.15 * 6 + 0.15 * 7 + 0.1 * 8)
    assert good["tier"] == "excellent" and good["oracle"]["model"] == "scripted-1"
    capped = run.records[1]
    assert capped["applied"] == ["cap:fiction"] and capped["overall"] == 5.0
    # rerun with the journal: nothing asked again
    run2, client2 = _run(replies, journal=tmp_path / "journal.jsonl")
    assert client2.provider.calls == [] and run2.keys == run.keys and len(run2.rejects) == 3


def test_parse_rechecks_answers_the_schema_did_not_see():
    """A client without a schema check (or a provider ignoring it) hands parse the raw answer: parse itself
    rejects a missing dimension, a non-number, an out-of-range score and non-JSON text."""
    d = load_filter(EDU)
    task = OracleTask(d)
    doc = {"id": "a", "title": "t", "content": "c"}

    class R:
        provider, model = "p", "m"

        def __init__(self, text, parsed=None):
            self.text, self.parsed, self.ok = text, parsed, True

    cases = {
        "missing_dimension": R("", {k: v for k, v in GOOD.items() if k != "reliability"}),
        "score_out_of_range": R("", {**GOOD, "clarity": -1}),
        "not_a_number": R("", {**GOOD, "clarity": "high"}),
        "invalid_json": R("no json here"),
        "unknown_content_type": R("", {**GOOD, "content_type": "poetry"}),
    }
    for reason, result in cases.items():
        out = task.parse(doc, result)
        assert getattr(out, "reason", None) == reason, (reason, out)
    text_answer = task.parse(doc, R("Sure! " + json.dumps(GOOD) + " Done."))
    assert text_answer["tier"] == "excellent"
    nested = task.parse(doc, R("", {**{k: {"score": v} for k, v in GOOD.items() if k != "content_type"},
                                    "content_type": "other"}))
    assert nested["scores"]["clarity"] == 7.0
