"""The poetry data half of the graph, materialized in process with a scripted LLM resource."""

import collections
import itertools
import json
import shutil

import dagster as dg
import pytest
import yaml

from assets import poetry
from distillery_assets.io import read_jsonl
from distillery_assets.llm.errors import ProviderError
from distillery_assets.paths import config_dir
from tests.support.llm import scripted_llm

VOLUMES = {"good_poems": 8, "bad_poems": 6, "critiques": 8, "briefs": 16, "comparisons": 4, "autopsies": 4,
           "dialogues": 4, "lessons": 5, "poet_pairs": 16}


@pytest.fixture(autouse=True)
def known_volumes(tmp_path, monkeypatch):
    """The test's own copy of the configs, with the volumes the assertions below count on."""
    dest = tmp_path / "config"
    shutil.copytree(config_dir(), dest)
    pipeline = dest / "poetry" / "pipeline.yaml"
    cfg = yaml.safe_load(pipeline.read_text())
    cfg["profiles"]["small"].update(VOLUMES)
    pipeline.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DISTILLERY_CONFIG_DIR", str(dest))
    monkeypatch.delenv("DISTILLERY_POETRY_PROFILE", raising=False)

GOOD_REPLY = ('I keep returning to "{quote}" in line 2: the verb carries the weight. The close explains too much; '
              "end one line earlier and trust the image.")


def scripted_poetry_llm():
    """The real LLM resource over a scripted provider that answers by the task each prompt belongs to (the n-th
    call of a task gets n): the first lesson call fails at the provider, the second critique says "delve into",
    poems (the poet's, the student's revisions, the bad ones) are short verse, the rest a workshop reply
    quoting the prompt's first line. Every finished batch is logged in CALLS as (label, size)."""
    counters = collections.defaultdict(itertools.count)

    def reply(messages, **_):
        system, user = messages[0].content, messages[-1].content
        if "craft lesson" in user and next(counters["lesson"]) == 0:
            return ProviderError("HTTP 500: overloaded")
        if "clich\u00e9d poem about" in user:
            i = next(counters["bad_poem"])
            return f"my heart of gold {i}\nwill never fall apart {i}"
        if "workshop response" in user and next(counters["critique"]) == 1:
            return "Let us delve into this poem. " + GOOD_REPLY.format(quote="x" * 8)
        if system == poetry.PoetryConfig().poet_system or "revised poem" in user:
            return f"salt on the sill {next(counters['poem'])}\nthe kettle ticking its clock {user[:20]}"
        return GOOD_REPLY.format(quote=user.strip().split("\n")[0][:30] or "xxxxxx")

    return scripted_llm(reply, batches=CALLS)


CALLS: list = []
DATA_ASSETS = [poetry.poetry_good_poems, poetry.poetry_bad_poems, poetry.poetry_critiques, poetry.poetry_briefs,
               poetry.poetry_comparisons, poetry.poetry_autopsies, poetry.poetry_dialogues, poetry.poetry_lessons,
               poetry.poetry_poet_pairs, poetry.tutor_feedback, poetry.educator_dataset, poetry.poet_dataset]


def test_data_half_materializes_with_gate_rejects_and_valid_splits(data_dir):
    CALLS.clear()
    result = dg.materialize(DATA_ASSETS + poetry.GATE_CHECKS + poetry.DATASET_CHECKS, resources={"llm": scripted_poetry_llm()})
    assert result.success
    gen = data_dir / "poetry" / "generated"
    assert len(read_jsonl(gen / "good_poems.jsonl")) == 8
    bad = read_jsonl(gen / "bad_poems.jsonl")
    assert len(bad) == 6 and bad[0]["quality"] == "bad"
    # the failed lesson call is a reject, not a record with an empty field
    lessons = read_jsonl(gen / "lesson.jsonl")
    assert len(lessons) == 4 and all(r["lesson"] for r in lessons)
    assert "provider error" in read_jsonl(data_dir / "poetry" / "rejects" / "lesson.jsonl")[0]["reason"]
    # the critique with an LLM-ism passes generation but is stopped by the gate, with its reason logged
    gate_log = read_jsonl(data_dir / "poetry" / "rejects" / "quality_gate_educator.jsonl")
    reasons = [r["_reject_reasons"] for r in gate_log]
    too_long = [r for r in reasons if r[0].startswith("too_long: ")]  # over the educator's max_seq
    assert [r for r in reasons if r not in too_long] == [["llm_ism: 'delve into'"]]
    train = read_jsonl(data_dir / "poetry" / "datasets" / "educator" / "train.jsonl")
    valid = read_jsonl(data_dir / "poetry" / "datasets" / "educator" / "valid.jsonl")
    # 8 critiques - 1 gated + 16 briefs + 4 comparisons + 4 autopsies + 4 dialogues + 4 lessons = 39, less the long
    assert len(train) + len(valid) == 39 - len(too_long) and len(valid) == 4
    assert [m["role"] for m in train[0]["messages"]] == ["system", "user", "assistant"]
    poet_train = read_jsonl(data_dir / "poetry" / "datasets" / "poet" / "train.jsonl")
    assert poet_train[0]["messages"][0]["content"] == poetry.PoetryConfig().poet_system
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert len(checks) == 11 and all(checks.values()), checks
    outputs = result.output_for_node("educator_dataset", "educator_train")
    assert outputs == data_dir / "poetry" / "datasets" / "educator" / "train.jsonl"
    assert ("poetry/dialogue/revision", 4) in CALLS and ("poetry/dialogue/follow_up", 4) in CALLS


def test_user_bad_poems_skip_generation_and_bad_files_are_logged(data_dir, tmp_path, monkeypatch):
    inputs = tmp_path / "inputs"
    (inputs / "poetry" / "good").mkdir(parents=True)
    (inputs / "poetry" / "bad").mkdir(parents=True)
    (inputs / "poetry" / "good" / "a.txt").write_text("frost on the sill\n", encoding="utf-8")
    (inputs / "poetry" / "good" / "empty.txt").write_text("", encoding="utf-8")
    (inputs / "poetry" / "bad" / "b.jsonl").write_text('{"text": "roses are red"}\n{oops\n', encoding="utf-8")
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(inputs))
    CALLS.clear()
    result = dg.materialize([poetry.poetry_good_poems, poetry.poetry_bad_poems], resources={"llm": scripted_poetry_llm()})
    assert result.success and CALLS == []
    assert read_jsonl(data_dir / "poetry" / "rejects" / "good_poems.jsonl") == [
        {"source": "good/empty.txt", "reason": "empty file"}]
    bad_rejects = read_jsonl(data_dir / "poetry" / "rejects" / "bad_poems.jsonl")
    assert bad_rejects[0]["source"] == "bad/b.jsonl:2" and "malformed JSONL" in bad_rejects[0]["reason"]
    mats = {m.asset_key.to_user_string(): m.metadata
            for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())}
    assert mats["poetry_bad_poems"]["origin"].value == "inputs"


def test_task_metadata_keeps_line_breaks_tables_records_and_shows_llm_usage(data_dir):
    result = dg.materialize([poetry.poetry_good_poems, poetry.poetry_bad_poems, poetry.poetry_critiques],
                            resources={"llm": scripted_poetry_llm()})
    assert result.success
    mats = {m.asset_key.to_user_string(): m.metadata
            for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())}
    good = mats["poetry_good_poems"]
    first = read_jsonl(data_dir / "poetry" / "generated" / "good_poems.jsonl")[0]
    assert "\n" in first["text"] and first["text"].strip().splitlines()[1] in good["preview"].value
    assert "```text\n" in good["preview"].value  # the poem in a block that keeps its line breaks
    assert isinstance(good["records_preview"], dg.TableMetadataValue)
    assert {c.name for c in good["records_preview"].schema.columns} >= {"id", "text", "source"}
    critiques = mats["poetry_critiques"]
    assert isinstance(critiques["records_preview"], dg.TableMetadataValue)
    usage = {k: critiques[k].value for k in ("llm_requests", "llm_provider_calls", "llm_retries", "input_tokens",
                                             "output_tokens", "estimated_cost_usd")}
    assert usage["llm_requests"] == 8 and usage["llm_retries"] == 0, usage  # the fake reports no provider attempts
    assert not any(k.startswith("llm_input") or k == "llm_cost_usd" for k in critiques)


def test_a_task_with_no_passing_record_warns_it_does_not_fail_the_job(data_dir):
    from distillery_assets.poetry.generate import poetry_dir

    path = poetry_dir("generated", "autopsy.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"poem": {"text": "a\nb\nc\nd"}, "autopsy": "A vague note that quotes no line at all."})
                    + "\n", encoding="utf-8")
    check = next(c for c in poetry.GATE_CHECKS if "poetry_autopsies_quality_gate" in str(c.check_keys))
    result = check(dg.build_op_context())
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["rejected"].value == 1
