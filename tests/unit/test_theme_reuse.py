"""The theme chain's first three assets skip finished work: materialized again with the same books, settings and
keyword sets (what ``*filter_report`` of any filter version does), ``gutenberg_books``, ``gutenberg_chunks`` and
``theme_chunks`` read and write nothing, say ``reused`` with the last run's figures, and the catalogue gets a
row of this run for the same file (same sha256, lineage still down to the books); a changed setting, an edited
book or an edited output is built again."""

import shutil

import dagster as dg
import pytest

from assets import theme
from distillery_assets.catalog import Catalog
from distillery_assets.paths import repo_root
from distillery_assets.theme import books, chunking, keywords

CHAIN = [theme.gutenberg_books, theme.gutenberg_chunks, theme.theme_chunks]
NAMES = [a.key.to_user_string() for a in CHAIN]


def _resources():
    from io_managers.files import DistilleryIOManager
    from resources.catalog import CatalogResource

    catalog = CatalogResource()
    return {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)}


@pytest.fixture
def books_dir(tmp_path, monkeypatch):
    """An inputs folder of our own with two of the sample books (edited by one test)."""
    folder = tmp_path / "inputs" / "gutenberg"
    folder.mkdir(parents=True)
    sample = repo_root() / "data" / "inputs" / "gutenberg"
    for name in ("manifest.jsonl", "pg61.txt", "pg33870.txt"):
        shutil.copy(sample / name, folder / name)
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(tmp_path / "inputs"))
    return folder


def _run(instance, chunk_size: int = 1024):
    config = {"ops": {"gutenberg_books": {"config": {"ids": [61, 33870]}},
                      "gutenberg_chunks": {"config": {"chunk_size": chunk_size}}}}
    result = dg.materialize(CHAIN, resources=_resources(), run_config=config, instance=instance)
    assert result.success
    return result


def _meta(result, name: str) -> dict:
    [mat] = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _written(data_dir) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file the three assets write: an atomic rewrite changes both."""
    folder = data_dir / "theme"
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if not p.name.startswith(".")}


def _forbid_work(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a reused asset did the work again")

    monkeypatch.setattr(books, "load_books", refuse)
    monkeypatch.setattr(chunking, "chunk_books", refuse)
    monkeypatch.setattr(keywords, "ChunkFilter", refuse)


def test_second_materialization_reads_and_writes_nothing(data_dir, books_dir, monkeypatch):
    with dg.instance_for_test() as instance:
        first = _run(instance)
        before = _written(data_dir)
        assert {"gutenberg_books.jsonl", "gutenberg_books.rejects.jsonl", "gutenberg_chunks.jsonl",
                "theme_chunks.jsonl", "theme_chunks_totals.png"} <= set(before)

        with monkeypatch.context() as patch:
            _forbid_work(patch)
            second = _run(instance)
        assert _written(data_dir) == before  # not one file rewritten
        assert all(_meta(first, n)["reused"] is False for n in NAMES)
        for name in NAMES:
            old, new = _meta(first, name), _meta(second, name)
            assert new["reused"] is True and new["reused_from_run"] == first.run_id
            assert new["fingerprint"] == old["fingerprint"] and new["sha256"] == old["sha256"]
        assert _meta(second, "gutenberg_chunks")["chunks"] == _meta(first, "gutenberg_chunks")["chunks"] > 0
        kept = _meta(second, "theme_chunks")
        assert kept["kept"] == _meta(first, "theme_chunks")["kept"] > 0
        assert "| total | chunks |" in kept["histogram_of_totals"]
        assert _meta(second, "gutenberg_books")["books"] == 2

    catalog = Catalog()
    for name in NAMES:  # one row per materialization, both of the same file
        rows = catalog.query("SELECT sha256, run_id FROM artifacts WHERE asset_key = ? ORDER BY id", [name])
        assert [r["run_id"] for r in rows] == [first.run_id, second.run_id]
        assert rows[0]["sha256"] == rows[1]["sha256"]
    newest = catalog.latest_artifact("gutenberg_books", None)
    inputs = [r["input_path"] for r in catalog.artifact_inputs(newest["id"])]  # the reused row names its books
    assert all(any(p.endswith(end) for p in inputs) for end in ("gutenberg/pg61.txt", "gutenberg/pg33870.txt",
                                                                "theme/books.json"))
    leaves = {r["source"] for r in catalog.lineage_sources("theme_chunks")}
    assert any(s.endswith("pg61.txt") for s in leaves) and any(s.endswith("theme_keywords.json") for s in leaves)


def test_a_changed_setting_book_or_output_is_built_again(data_dir, books_dir):
    with dg.instance_for_test() as instance:
        first = _run(instance)
        changed = _run(instance, chunk_size=800)  # the chunk setting: chunks and what is made from them again
        assert [_meta(changed, n)["reused"] for n in NAMES] == [True, False, False]
        assert _meta(changed, "gutenberg_chunks")["chunks"] > _meta(first, "gutenberg_chunks")["chunks"]

        book = books_dir / "pg61.txt"
        text = book.read_text(encoding="utf-8")
        assert "*** END OF" in text
        book.write_text(text.replace("*** END OF", "A paragraph added by hand.\n\n*** END OF", 1), encoding="utf-8")
        edited = _run(instance, chunk_size=800)
        assert _meta(edited, "gutenberg_books")["reused"] is False
        assert _meta(edited, "gutenberg_books")["sha256"] != _meta(changed, "gutenberg_books")["sha256"]

        chunks = data_dir / "theme" / "gutenberg_chunks.jsonl"  # an output edited by hand is not trusted
        chunks.write_text(chunks.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
        again = _run(instance, chunk_size=800)  # made again, the same bytes: what is made from it stays
        assert [_meta(again, n)["reused"] for n in NAMES] == [True, False, True]
        assert _meta(again, "gutenberg_chunks")["sha256"] == _meta(edited, "gutenberg_chunks")["sha256"]

        (data_dir / "theme" / "theme_chunks_totals.png").unlink()  # nor is an output that went missing
        last = _run(instance, chunk_size=800)
        assert [_meta(last, n)["reused"] for n in NAMES] == [True, True, False]
        assert (data_dir / "theme" / "theme_chunks_totals.png").exists()
