"""Dagster wiring of the corpus assets, with the real LLM client over a scripted provider; the real LLM
resource's settings and the local model are exercised in tests/e2e/test_corpus_e2e.py."""

import hashlib
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from assets import corpus
from distillery_assets.llm.providers.base import ProviderReply
from resources.catalog import CatalogResource
from tests.support.llm import scripted_llm

from .test_corpus_prompts import REFERENCE, reference_prompts


def scripted_corpus_llm():
    """The real LLM resource over a scripted provider: every answer a short plain passage; each prompt asked is
    logged in CALLS."""

    def reply(messages, **_):
        CALLS.append(messages[-1].content)
        return ProviderReply(f"A plain passage of prose about item {len(CALLS)}.", "stop", 3, 7)

    return scripted_llm(reply)


CALLS: list[str] = []


def run(selection, *, partition=None, start=None, end=None, config=None, checks=()):
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end} if start else None
    return dg.materialize(
        [*selection, *checks],
        partition_key=partition,
        tags=tags,
        resources={"llm": scripted_corpus_llm(), "catalog": CatalogResource()},
        run_config={"ops": {a.key.path[-1]: {"config": config} for a in selection if config and "corpus" in a.key.path[-1] and "prompts" not in a.key.path[-1]}},
        raise_on_error=False,
    )


def meta(result, key):
    return {k: v.value for k, v in result.asset_materializations_for_node(key)[0].metadata.items()}


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference not beside the checkout")
def test_all_prompts_partitions_reproduce_the_reference_layout(data_dir):
    stories = run([corpus.story_prompts], start="200-400w", end="1800-2500w")
    encyclopedia = run([corpus.encyclopedia_prompts], start="arts", end="technology")
    assert stories.success and encyclopedia.success
    assert len(stories.get_asset_materialization_events()) == 5
    assert len(encyclopedia.get_asset_materialization_events()) == 8
    root = data_dir / "corpus"
    found = {str(p.parent.relative_to(root)): p.read_text() for p in root.rglob("prompts.txt")}
    assert found == reference_prompts()
    assert sum(len(t.splitlines()) for t in found.values()) == 850


def test_corpus_asset_dry_run_limit_resume_rejects_and_checks(data_dir):
    CALLS.clear()
    assert run([corpus.encyclopedia_prompts], partition="mathematics").success
    leaf = data_dir / "corpus" / "encyclopedia" / "mathematics" / "algebra" / "prompts.txt"
    leaf.write_text(leaf.read_text() + "no_space_here\n../escape.corpus Sneaky.\nnotes.txt Wrong suffix.\n")

    dry = run([corpus.encyclopedia_corpus], partition="mathematics", config={"dry_run": True})
    assert dry.success and CALLS == [] and dry.get_asset_materialization_events() == []
    [observed] = dry.asset_observations_for_node("encyclopedia_corpus")
    listed = {k: v.value for k, v in observed.metadata.items()}
    assert (listed["missing"], listed["would_generate_this_run"], listed["rejected_lines"]) == (100, 10, 3)
    assert "- encyclopedia/mathematics/algebra/algebra_introduction.corpus" in listed["missing_files"]

    parse_check, prose_check, words_check = corpus._encyclopedia_checks
    check_only = dg.materialize([corpus.encyclopedia_prompts, parse_check], selection=dg.AssetSelection.checks(parse_check),
                                resources={"catalog": CatalogResource()})
    [parsed] = check_only.get_asset_check_evaluations()
    assert parsed.passed is False and parsed.metadata["rejected"].value == 3  # the three bad lines
    assert "algebra/prompts.txt line 6" in parsed.metadata["rejects"].value[0]

    leftover = leaf.parent / ".tmp-algebra_history.corpus-k1ll3d"  # what a SIGKILLed write leaves behind
    leftover.write_text("half a docu")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    first = run([corpus.encyclopedia_corpus], partition="mathematics", config={"limit": 3},
                checks=[prose_check, words_check])
    assert not leftover.exists()
    m = meta(first, "encyclopedia_corpus")
    assert (m["generated"], m["failed"], m["still_missing"], m["skipped_existing"]) == (3, 0, 97, 0)
    made = sorted(p.name for p in (data_dir / "corpus" / "encyclopedia" / "mathematics").rglob("*.corpus"))
    assert made == ["algebra_history.corpus", "algebra_introduction.corpus", "algebra_key_concepts.corpus"]
    assert len(CALLS) == 3 and all(c.endswith("Aim for 800-1200 words.") for c in CALLS)
    evals = {e.asset_check_key.name: e for e in first.get_asset_check_evaluations()}
    assert evals["files_are_prose"].passed is True
    assert evals["word_counts_on_target"].passed is False  # fake texts are far below 800 words

    second = run([corpus.encyclopedia_corpus], partition="mathematics", config={"limit": 3})
    m = meta(second, "encyclopedia_corpus")
    assert (m["generated"], m["skipped_existing"], m["still_missing"]) == (3, 3, 94)
    assert len(CALLS) == 6 and len(set(CALLS)) == 6


def test_corpus_asset_without_prompts_fails_clearly(data_dir):
    result = run([corpus.story_corpus], partition="200-400w")
    assert not result.success
    failure = result.failure_data_for_node("story_corpus")
    assert "materialize story_prompts" in failure.error.message


def test_every_line_parses_judges_the_partitions_of_its_run(data_dir):
    parse_check = corpus._encyclopedia_checks[0]
    one = run([corpus.encyclopedia_prompts], partition="mathematics", checks=[parse_check])
    [evaluation] = one.get_asset_check_evaluations()
    assert evaluation.passed is True  # the other seven categories have no prompts yet: not this check's business
    assert evaluation.metadata["partitions_checked"].value == ["mathematics"]
    assert evaluation.metadata["prompts"].value == 100

    ranged = run([corpus.encyclopedia_prompts], start="arts", end="geography", checks=[parse_check])
    [evaluation] = ranged.get_asset_check_evaluations()
    assert evaluation.passed is True and evaluation.metadata["partitions_checked"].value == ["arts", "geography"]

    [leaf] = sorted((data_dir / "corpus" / "encyclopedia" / "geography").rglob("prompts.txt"))[:1]
    leaf.write_bytes(leaf.read_bytes() + b"bad_\xff.corpus Not UTF-8.\n")
    alone = dg.materialize([corpus.encyclopedia_prompts, parse_check], selection=dg.AssetSelection.checks(parse_check),
                           tags={"dagster/partition": "mathematics"}, resources={"catalog": CatalogResource()})
    [evaluation] = alone.get_asset_check_evaluations()
    assert evaluation.passed is True and evaluation.metadata["partitions_checked"].value == ["mathematics"]
    everything = dg.materialize([corpus.encyclopedia_prompts, parse_check],
                                selection=dg.AssetSelection.checks(parse_check), resources={"catalog": CatalogResource()})
    [evaluation] = everything.get_asset_check_evaluations()
    assert evaluation.passed is False and evaluation.metadata["rejected"].value == 1
    assert evaluation.metadata["partitions_checked"].value == ["arts", "geography", "mathematics"]
    assert f"{leaf.parent.name}/prompts.txt line" in evaluation.metadata["rejects"].value[0]
    assert "not UTF-8" in evaluation.metadata["rejects"].value[0]


def test_each_corpus_file_written_is_one_catalogue_row_made_from_its_prompts(data_dir):
    from distillery_assets.catalog import Catalog

    assert run([corpus.encyclopedia_prompts], partition="mathematics").success
    first = run([corpus.encyclopedia_corpus], partition="mathematics", config={"limit": 3})
    m = meta(first, "encyclopedia_corpus")
    assert (m["llm_requests"], m["llm_cache_hits"], m["llm_retries"]) == (3, 0, 0)
    cat = Catalog()
    rows = cat.query("SELECT id, path, kind, sha256, partition, metadata->>'words' AS words FROM artifacts "
                     "WHERE asset_key = 'encyclopedia_corpus' ORDER BY path")
    assert [Path(r["path"]).name for r in rows] == [
        "algebra_history.corpus", "algebra_introduction.corpus", "algebra_key_concepts.corpus"]
    assert all(r["kind"] == "file" and r["partition"] == "mathematics" and int(r["words"]) > 0 for r in rows)
    assert rows[0]["sha256"] == hashlib.sha256(cat.absolute(rows[0]["path"]).read_bytes()).hexdigest()
    prompts = data_dir / "corpus" / "encyclopedia" / "mathematics" / "algebra" / "prompts.txt"
    for row in rows:
        [edge] = cat.artifact_inputs(row["id"])
        assert (edge["input_path"], edge["input_asset_key"]) == (cat.relative(prompts), "encyclopedia_prompts")
        assert edge["input_sha256"] == hashlib.sha256(prompts.read_bytes()).hexdigest()
    assert run([corpus.encyclopedia_corpus], partition="mathematics", config={"limit": 2}).success
    assert cat.query("SELECT count(*) AS n FROM artifacts WHERE asset_key = 'encyclopedia_corpus' "
                     "AND kind = 'file'") == [{"n": 5}]
