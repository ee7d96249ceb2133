"""filter_ground_truth's files describe the run that made them, through the real asset (the real LLM client over a
scripted provider, the real catalogue): a run whose every answer is rejected, or that labels too few, or whose
labelling stops with an error, fails, but only after writing its own (possibly empty) labels and its rejects,
atomically and catalogued; the previous run's labels never stay looking current."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import pytest

from assets import filters
from distillery_assets.catalog import Catalog
from distillery_assets.filters.paths import FilterPaths
from distillery_assets.io import atomic_write_jsonl, read_jsonl
from resources.catalog import CatalogResource
from tests.support.llm import scripted_llm

KEY = "educational_value.v1"  # the shipped version: oracle mode llm, six dimensions and content-type caps
CONTENT = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in green plants. " * 4


def _reply(messages, **_):
    """A whole answer for documents whose text says GOOD, an answer missing 'clarity' for the others."""
    scores = {"knowledge_depth": 7, "clarity": 6, "coherence": 7, "teaching_devices": 5, "reliability": 6,
              "audience_fit": 6, "content_type": "other"}
    if "GOOD" not in messages[0].content:
        scores.pop("clarity")
    return json.dumps(scores)


def _prefiltered(paths: FilterPaths, ids: list[str], good: set[str]) -> None:
    """The prefilter's decisions (every document passed): what filter_ground_truth reads."""
    atomic_write_jsonl(paths.prefiltered, [
        {"id": i, "title": f"{'GOOD' if i in good else 'Plain'} {i}", "content": CONTENT, "source": "test",
         "prefilter": {"passed": True, "reason": "passed", "rule": None, "detail": ""}} for i in ids])


def _label(instance) -> dg.ExecuteInProcessResult:
    return dg.materialize([filters.filter_ground_truth], partition_key=KEY, instance=instance, raise_on_error=False,
                          resources={"llm": scripted_llm(_reply), "catalog": CatalogResource()})


def _catalogued_sha(path) -> str:
    cat = Catalog()
    [row] = cat.query("SELECT sha256 FROM artifacts WHERE path = ? ORDER BY id DESC LIMIT 1", [cat.relative(path)])
    return row["sha256"]


def _first_run(paths: FilterPaths, instance) -> None:
    _prefiltered(paths, ["a0", "a1", "a2", "a3"], good={"a0", "a1", "a2", "a3"})
    assert _label(instance).success
    assert [r["id"] for r in read_jsonl(paths.labels)] == ["a0", "a1", "a2", "a3"]


@pytest.mark.parametrize("good, labelled", [(set(), []), ({"b1", "b3"}, ["b1", "b3"])],
                         ids=["every-answer-rejected", "too-few-labels"])
def test_a_failed_oracle_run_leaves_its_own_labels_and_rejects_not_the_previous_ones(data_dir, good, labelled):
    paths = FilterPaths.for_key(KEY)
    with dg.instance_for_test() as instance:
        _first_run(paths, instance)
        _prefiltered(paths, ["b0", "b1", "b2", "b3", "b4"], good=good)  # new documents: new questions
        result = _label(instance)
    assert not result.success
    assert [r["id"] for r in read_jsonl(paths.labels)] == labelled  # no a0..a3 left looking current
    rejects = read_jsonl(paths.oracle_rejects)
    assert sorted(r["key"] for r in rejects) == sorted({"b0", "b1", "b2", "b3", "b4"} - good)
    assert {(r["kind"], r["reason"]) for r in rejects} == {("reject", "invalid_json")}
    failure = result.failure_data_for_node("filter_ground_truth").user_failure_data
    assert f"only {len(labelled)} labelled documents" in failure.description
    assert "labeled_articles.jsonl and oracle_rejects.jsonl hold this run's outcome" in failure.description
    for path in (paths.labels, paths.oracle_rejects):  # catalogued as written, failed run or not
        assert _catalogued_sha(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    usage = json.loads(paths.oracle_usage.read_text())
    assert usage["total"]["documents_asked"] == 9  # the failed run's calls are counted too


def test_labelling_that_stops_with_an_error_leaves_no_labels_and_names_the_error(data_dir):
    paths = FilterPaths.for_key(KEY)
    with dg.instance_for_test() as instance:
        _first_run(paths, instance)
        lines = paths.oracle_journal.read_text().splitlines(keepends=True)
        paths.oracle_journal.write_text("{not json\n" + "".join(lines[1:]))  # a corrupt line: the run cannot resume
        result = _label(instance)
    assert not result.success
    assert read_jsonl(paths.labels) == []
    [row] = read_jsonl(paths.oracle_rejects)
    assert (row["kind"], row["reason"], row["key"]) == ("error", "labelling_stopped", None)
    assert "JournalError" in row["detail"] and "oracle_journal.jsonl:1" in row["detail"]
