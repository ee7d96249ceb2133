"""Catalog: artefacts with fingerprints, inputs and lineage; LLM calls; runs; clear errors."""

import json
from pathlib import Path

import pytest

from distillery_assets.catalog import Catalog, CatalogError, InputRef, fingerprint


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_record_artifact_computes_fingerprint_and_relative_path(data_dir):
    f = _write(data_dir / "corpus" / "stories.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3}')
    rec = Catalog().record_artifact(asset_key="story_corpus", partition="short", path=f, run_id="r1")
    assert rec.path == "corpus/stories.jsonl"
    assert rec.record_count == 3  # last line has no newline and still counts
    assert rec.bytes == f.stat().st_size
    import hashlib
    assert rec.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    assert (data_dir / "catalog.duckdb").exists()


def test_same_artifact_twice_in_one_run_is_one_row_but_new_run_adds_history(data_dir):
    f = _write(data_dir / "x.txt", "x")
    cat = Catalog()
    a = cat.record_artifact(asset_key="x", path=f, run_id="r1")
    b = cat.record_artifact(asset_key="x", path=f, run_id="r1")
    c = cat.record_artifact(asset_key="x", path=f, run_id="r2")
    assert a.id == b.id != c.id
    assert cat.query("select count(*) n from artifacts") == [{"n": 2}]
    assert cat.latest_artifact("x", None)["run_id"] == "r2"


def test_directory_hash_covers_names_and_contents(data_dir):
    d = data_dir / "models" / "lora"
    _write(d / "adapter_model.safetensors", "weights")
    _write(d / "sub" / "config.json", "{}")
    first = fingerprint(d)
    assert (first.kind, first.files, first.bytes) == ("dir", 2, 9)
    (d / "sub" / "config.json").write_text("{ }")
    assert fingerprint(d).sha256 != first.sha256
    (d / "sub" / "config.json").write_text("{}")
    assert fingerprint(d).sha256 == first.sha256
    (d / "sub" / "config.json").rename(d / "sub" / "other.json")
    assert fingerprint(d).sha256 != first.sha256


def test_missing_artifact_path_is_named(data_dir):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Catalog().record_artifact(asset_key="x", path=data_dir / "nope.txt")


def test_paths_outside_data_dir_are_stored_absolute(data_dir, tmp_path):
    outside = _write(tmp_path / "shipped" / "book.txt", "book")
    rec = Catalog().record_artifact(asset_key="book", path=outside)
    assert rec.path == outside.resolve().as_posix()


def test_recursive_lineage_walks_inputs_by_path_and_sha(data_dir):
    cat = Catalog()
    book = _write(data_dir / "theme" / "book.txt", "text")
    chunks = _write(data_dir / "theme" / "chunks.jsonl", "{}\n")
    split = _write(data_dir / "theme" / "train.jsonl", "{}\n")
    lora = data_dir / "models" / "poet_lora"
    _write(lora / "adapter.bin", "w")
    gguf = _write(data_dir / "models" / "poet.gguf", "gguf")
    cat.record_artifact(asset_key="books", path=book)
    cat.record_artifact(asset_key="chunks", path=chunks, inputs=[book])
    cat.record_artifact(asset_key="splits", partition="train", path=split, inputs=[chunks])
    cat.record_artifact(asset_key="poet_lora", path=lora, inputs=[split, InputRef("base/model", "base_model")])
    cat.record_artifact(asset_key="poet_gguf", path=gguf, inputs=[lora])
    rows = cat.lineage("poet_gguf")
    edges = {(r["depth"], r["asset_key"], r["input_asset_key"], r["input_path"]) for r in rows}
    assert edges == {
        (1, "poet_gguf", "poet_lora", "models/poet_lora"),
        (2, "poet_lora", "splits", "theme/train.jsonl"),
        (2, "poet_lora", "base_model", "base/model"),
        (3, "splits", "chunks", "theme/chunks.jsonl"),
        (4, "chunks", "books", "theme/book.txt"),
    }
    assert [r["input_partition"] for r in rows if r["input_asset_key"] == "splits"] == ["train"]

    derived = {(r["depth"], r["asset_key"]) for r in cat.derived_from("theme/book.txt")}
    assert derived == {(1, "chunks"), (2, "splits"), (3, "poet_lora"), (4, "poet_gguf")}
    assert {r["asset_key"] for r in cat.derived_from("splits")} == {"poet_lora", "poet_gguf"}
    assert {r["asset_key"] for r in cat.derived_from(str(book))} == {"chunks", "splits", "poet_lora", "poet_gguf"}


def test_lineage_does_not_follow_an_input_whose_content_changed(data_dir):
    cat = Catalog()
    src = _write(data_dir / "a.txt", "v1")
    cat.record_artifact(asset_key="a", path=src)
    src.write_text("v2 edited by hand")  # not re-registered
    out = _write(data_dir / "b.txt", "b")
    cat.record_artifact(asset_key="b", path=out, inputs=[src])
    [row] = cat.lineage("b")
    assert row["input_asset_key"] is None  # the catalogue never saw this version of a.txt


def test_llm_calls_keep_every_field_and_unknown_keys(data_dir):
    cat = Catalog()
    rows = [
        {"request_key": "k1", "provider": "local", "model": "smollm2", "tag": "story", "ok": True,
         "error": None, "finish_reason": "stop", "input_tokens": 10, "output_tokens": 20, "latency_s": 0.5,
         "cost_usd": 0.0, "cached": False, "created_at": "2026-01-02T03:04:05+00:00", "run_id": "r",
         "attempts": 2, "trace": "t-1"},
        {"request_key": "k1", "provider": "local", "model": "smollm2", "tag": "story", "ok": True,
         "cached": True, "input_tokens": 10, "output_tokens": 20, "cost_usd": 0.0},
        {"request_key": "k2", "provider": "openai", "model": "gpt", "tag": "story", "ok": False,
         "error": "timeout", "cached": False, "input_tokens": 5, "output_tokens": 0, "cost_usd": 0.25},
    ]
    assert cat.record_llm_calls(rows) == 3
    first = cat.query("select * from llm_calls order by id limit 1")[0]
    assert json.loads(first["extra"]) == {"trace": "t-1"} and first["attempts"] == 2
    assert str(first["created_at"]) == "2026-01-02 03:04:05"
    usage = {(r["provider"]): r for r in cat.query("select * from llm_usage")}
    assert (usage["local"]["calls"], usage["local"]["cached"], usage["local"]["input_tokens"]) == (2, 1, 10)
    assert (usage["openai"]["errors"], usage["openai"]["cost_usd"]) == (1, 0.25)
    assert (usage["local"]["provider_calls"], usage["local"]["retries"]) == (2, 1)  # the cached row costs none


def test_bad_llm_rows_name_the_row_and_field(data_dir):
    cat = Catalog()
    with pytest.raises(ValueError, match="row 1: field 'request_key'"):
        cat.record_llm_calls([{"request_key": "a"}, {"provider": "x"}])
    with pytest.raises(ValueError, match="created_at"):
        cat.record_llm_calls([{"request_key": "a", "created_at": "yesterday"}])
    assert cat.query("select count(*) n from llm_calls") == [{"n": 0}]


def test_runs_store_params_and_metrics(data_dir):
    cat = Catalog()
    cat.record_run(kind="train", name="poet_lora", run_id="r1", params={"lr": 2e-4}, metrics={"loss": 1.5})
    [row] = cat.query("select kind, name, params->>'lr' lr, metrics->>'loss' loss from runs")
    assert row == {"kind": "train", "name": "poet_lora", "lr": "0.0002", "loss": "1.5"}


def test_sql_errors_name_the_catalogue_file(data_dir):
    with pytest.raises(CatalogError, match="catalog.duckdb"):
        Catalog().query("select * from no_such_table")


def test_paths_in_run_counts_distinct_files_of_one_run(data_dir):
    cat = Catalog()
    for i in range(3):
        (data_dir / f"{i}.txt").write_text(str(i))
        cat.record_artifact(asset_key="many", path=data_dir / f"{i}.txt", run_id="r1")
    cat.record_artifact(asset_key="many", path=data_dir / "0.txt", run_id="r1")  # same file again
    cat.record_artifact(asset_key="many", partition="p", path=data_dir / "1.txt", run_id="r1")
    assert cat.paths_in_run("many", None, "r1") == 3
    assert cat.paths_in_run("many", "p", "r1") == 1 and cat.paths_in_run("many", None, "r2") == 0


def test_a_catalogue_from_before_the_attempts_column_gains_it(data_dir):
    import duckdb

    from distillery_assets.catalog import schema

    old_tables = schema.TABLES.split("-- files made before")[0].replace("    extra JSON,\n    attempts INTEGER\n",
                                                                          "    extra JSON\n")
    assert "attempts" not in old_tables
    path = data_dir / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(old_tables)
        con.execute("INSERT INTO llm_calls (request_key, created_at, cached, ok) VALUES ('old', now(), false, true)")
    cat = Catalog(path)
    cat.record_llm_calls([{"request_key": "new", "ok": True, "cached": False, "attempts": 3}])
    rows = {r["request_key"]: r["attempts"] for r in cat.query("select request_key, attempts from llm_calls")}
    assert rows == {"old": None, "new": 3}
    [usage] = cat.query("select provider_calls, retries from llm_usage")
    assert (usage["provider_calls"], usage["retries"]) == (3, 2)
