"""Which documents a filter scores: platform assets (corpus files, chunk JSONL), a JSONL of articles, and a
streamed Hub dataset (the real datasets code, on rows this test writes)."""

from __future__ import annotations

import json

import pytest

from distillery_assets.filters.config import AssetSource, HubSource, load_filter
from distillery_assets.filters.sources import (
    DOC_FIELDS,
    SourceReject,
    chunk_documents,
    collect,
    corpus_documents,
    hub_documents,
    jsonl_documents,
    spread,
)
from tests.support.filters_defs import copy_filter, edit_config


def _articles(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_jsonl_articles_with_bad_lines(tmp_path):
    path = _articles(tmp_path / "a.jsonl", [
        {"id": 1, "title": "T", "content": "body", "url": "https://x.org/a", "source": "x", "published_date": "2020"},
        "not json",
        {"title": "no id", "content": "c"},
        {"id": "3", "text": "content under text"},
        {"id": "4", "content": 5},
    ])
    out = list(jsonl_documents(path))
    docs = [o for o in out if isinstance(o, dict)]
    rejects = [o for o in out if isinstance(o, SourceReject)]
    assert [d["id"] for d in docs] == ["1", "3"] and set(docs[0]) == set(DOC_FIELDS)
    assert docs[0]["published_date"] == "2020" and docs[1]["content"] == "content under text"
    assert [(r.where, r.reason) for r in rejects] == [(f"{path}:2", "malformed_line"), (f"{path}:3", "missing_field"),
                                                      (f"{path}:5", "missing_field")]


def test_corpus_and_chunk_assets(tmp_path):
    root = tmp_path / "corpus"
    (root / "stories" / "200-400w").mkdir(parents=True)
    (root / "stories" / "200-400w" / "a_fox.corpus").write_text("The fox ran.")
    (root / "stories" / "200-400w" / "prompts.txt").write_text("ignored")
    (root / "encyclopedia" / "science" / "physics").mkdir(parents=True)
    (root / "encyclopedia" / "science" / "physics" / "gravity.corpus").write_text("Gravity pulls.")
    stories = list(corpus_documents(root, "stories"))
    assert [d["id"] for d in stories] == ["stories/200-400w/a_fox.corpus"] and stories[0]["content"] == "The fox ran."
    enc = list(corpus_documents(root, "encyclopedia"))
    assert enc[0]["title"] == "science / physics: gravity" and enc[0]["source"] == "corpus/encyclopedia"
    assert list(corpus_documents(tmp_path / "none", "stories")) == []
    chunks = _articles(tmp_path / "chunks.jsonl", [
        {"chunk_id": "84-0", "source_id": 84, "source_title": "Frankenstein", "index": 0, "text": "It was", "length": 6},
        {"text": "no id"},
    ])
    out = list(chunk_documents(chunks, "gutenberg_chunks"))
    assert out[0]["id"] == "84-0" and out[0]["title"] == "Frankenstein" and isinstance(out[1], SourceReject)


def test_hub_source_streams_with_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    data = _articles(tmp_path / "hub.jsonl", [{"doc": f"d{i}", "body": f"text {i}", "link": f"u{i}"} for i in range(7)]
                     + [{"doc": "bad", "body": None, "link": ""}])
    src = HubSource.model_validate({"kind": "hub", "dataset": "json", "data_files": [str(data)], "limit": 3,
                                    "fields": {"id": "doc", "content": "body", "url": "link"}})
    docs = list(hub_documents(src))
    assert [d["id"] for d in docs] == ["d0", "d1", "d2"] and docs[1]["url"] == "u1" and docs[0]["source"] == "json"
    src_all = src.model_copy(update={"limit": 100})
    out = list(hub_documents(src_all))
    assert len(out) == 8 and isinstance(out[-1], SourceReject) and out[-1].reason == "missing_field"
    calls = []

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return iter([{"doc": "z", "body": "zz"}])

    list(hub_documents(src.model_copy(update={"config_name": "sample-10BT", "revision": "main"}), fake_load))
    assert calls[0][0] == ("json", "sample-10BT") and calls[0][1]["streaming"] is True
    assert calls[0][1]["revision"] == "main" and calls[0][1]["split"] == "train"


def test_spread_is_even_and_deterministic():
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread(list(range(3)), 5) == [0, 1, 2] and spread([1, 2], None) == [1, 2]


def test_collect_applies_limits_and_rejects_repeated_ids(tmp_path):
    folder = copy_filter(tmp_path / "defs", "deep_red_theme")
    articles = _articles(folder / "articles.jsonl", [{"id": "84-0", "content": "dup of a chunk id"},
                                                     {"id": "n1", "content": "new"}])
    edit_config(folder, lambda c: c.__setitem__("sources", [
        {"kind": "asset", "asset": "gutenberg_chunks", "limit": 2},
        {"kind": "jsonl", "path": articles.name},
    ]))
    chunks = _articles(tmp_path / "chunks.jsonl", [{"chunk_id": f"84-{i}", "text": f"t{i}"} for i in range(6)])
    d = load_filter(folder)
    located = []

    def locate(src: AssetSource):
        located.append(src.asset)
        return chunks

    got = collect(d, locate)
    assert located == ["gutenberg_chunks"]
    assert [x["id"] for x in got.documents] == ["84-0", "84-3", "n1"]
    assert [(r.reason, r.detail) for r in got.rejects] == [("duplicate_id", "84-0")]
    assert got.per_source == {"gutenberg_chunks": 2, "jsonl:articles.jsonl": 1}
    edit_config(folder, lambda c: c["sources"][1].__setitem__("path", "missing.jsonl"))
    with pytest.raises(ValueError, match=r"sources.1.path"):
        load_filter(folder)
