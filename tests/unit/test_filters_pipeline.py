"""The filters library's glue around the asset steps (``filters.pipeline``): one spelling of a document's text,
locating sources, the judged test table written once and read back, usage figures; and hashes that must not
move (score-shard digests, oracle seeds), so journals and caches written before stay valid."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from distillery_assets.filters import pipeline
from distillery_assets.filters.clean import clean_document
from distillery_assets.filters.config import AssetSource
from distillery_assets.filters.paths import FilterPaths
from distillery_assets.filters.score import _digest
from distillery_assets.filters.sources import MODEL_SEP, RULES_SEP, document_text
from distillery_assets.io.hashing import derived_seed


def test_document_text_is_one_spelling_with_the_rules_and_the_model_separators():
    doc = {"id": "a", "title": "  A title ", "content": "Body text."}
    assert document_text(doc) == "A title\nBody text." and RULES_SEP == "\n"
    assert document_text(doc, MODEL_SEP) == "A title\n\nBody text."
    assert document_text({"title": "", "content": "Only body."}, MODEL_SEP) == "Only body."
    assert document_text({"title": "T", "text": "split row"}, MODEL_SEP) == "T\n\nsplit row"
    # the scorer's input for cleaned documents is what filter_scores hashed before (its shard digests stay valid)
    for raw in ({"title": "<b>Plants</b>", "content": "<p>Leaves.</p>\n\n"}, {"title": "", "content": "  x y  "},
                {"title": "  Two\nlines ", "content": "c"}):
        d = clean_document(raw)
        assert document_text(d, MODEL_SEP) == f"{d.get('title') or ''}\n\n{d.get('content') or ''}".strip()


def test_hashes_journals_and_caches_depend_on_stay_the_same():
    assert _digest([{"id": "a", "text": "T\n\nbody"}, {"id": "b", "text": "x"}]) == "6f4d693be5d60c0a306f97db"
    assert derived_seed("educational_value", 1, "d1") == 226014176  # the oracle's per-document seed


def test_source_locator_names_what_to_materialize_and_records_corpus_files(data_dir):
    locate = pipeline.SourceLocator("educational_value.v1")
    with pytest.raises(pipeline.MissingSource, match=r"^educational_value.v1: source gutenberg_chunks .* "
                                                     "materialize it first"):
        locate(AssetSource(kind="asset", asset="gutenberg_chunks"))
    chunks = pipeline.chunk_file("theme_chunks")
    chunks.parent.mkdir(parents=True)
    chunks.write_text("{}\n")
    assert locate(AssetSource(kind="asset", asset="theme_chunks")) == chunks
    root = locate(AssetSource(kind="asset", asset="story_corpus"))
    assert locate.empty == [("story_corpus", root)] and not locate.refs
    assert "story_corpus has no .corpus files" in locate.empty_warnings()[0]
    story = root / "encyclopedia" / "science" / "a.corpus"
    story.parent.mkdir(parents=True)
    story.write_text("text")
    locate(AssetSource(kind="asset", asset="encyclopedia_corpus"))
    assert [(r.path, r.asset_key) for r in locate.refs] == [(story, "encyclopedia_corpus")]


def test_the_judged_test_table_is_written_once_and_read_back(tmp_path):
    paths = FilterPaths.of("educational_value", 1, outputs=tmp_path)
    paths.version_dir.mkdir(parents=True)
    table = {"model": {"mae": 1.25, "binary": {"threshold": 7.0, "n": 4}}, "mean": {"mae": 2.0}}
    pipeline.write_test_results(paths, table, SimpleNamespace(test={"model": {"mae": 1.5}}), "local CPU")
    assert pipeline.read_test_results(paths) == table
    saved = json.loads(paths.test_results.read_text())
    assert saved["weighted_sum_results"] == {"model": {"mae": 1.5}} and saved["ran_on"] == "local CPU"


def test_usage_figures_price_the_labels_over_every_run():
    totals = {"total": {"cost_usd": 0.003, "documents_asked": 30}}
    assert pipeline.usage_figures(totals, 1.234) == {"oracle_seconds": 1.23, "total_oracle_cost_usd": 0.003,
                                                     "oracle_usd_per_1000_documents": 0.1}
    assert pipeline.usage_figures({"total": {"cost_usd": 0, "documents_asked": 0}}, 0)[
        "oracle_usd_per_1000_documents"] == "n/a"
