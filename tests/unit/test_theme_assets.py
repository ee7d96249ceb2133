"""The theme assets up to the keyword filter, materialized in process with the real IO manager and catalogue:
bad book files are rejected by name while the others go through; metadata carries the counts."""

import json
import shutil

import dagster as dg
import pytest

from assets import theme
from distillery_assets.paths import repo_root


def _resources():
    from io_managers.files import DistilleryIOManager
    from resources.catalog import CatalogResource

    catalog = CatalogResource()
    return {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)}


def test_bad_books_named_good_books_chunked_and_filtered(data_dir, tmp_path):
    books_dir = tmp_path / "books"
    books_dir.mkdir()
    sample = repo_root() / "data" / "inputs" / "gutenberg"
    shutil.copy(sample / "pg61.txt", books_dir / "pg61.txt")
    shutil.copy(sample / "pg33870.txt", books_dir / "pg33870.txt")
    (books_dir / "pg624.txt").write_bytes(b"")  # empty
    (books_dir / "pg32.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # binary
    (books_dir / "pg35.txt").write_bytes("Caf\u00e9 society".encode("cp1252"))  # not UTF-8
    run_config = {"ops": {"gutenberg_books": {"config": {"local_dir": str(books_dir), "ids": [61, 33870, 624, 32, 35, 62]}},
                          "theme_chunks": {"config": {"min_matches": 3}}}}
    result = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks, theme.theme_chunks],
                            resources=_resources(), run_config=run_config)
    assert result.success
    meta = result.asset_materializations_for_node("gutenberg_books")[0].metadata
    assert meta["books"].value == 2 and meta["rejected"].value == 3
    assert meta["not_available"].value == [62]
    rejects = [json.loads(l) for l in (data_dir / "theme" / "gutenberg_books.rejects.jsonl").read_text().splitlines()]
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert "pg624.txt: empty" in reasons[624] and "pg32.txt: binary" in reasons[32] and "pg35.txt: not UTF-8" in reasons[35]

    chunks = [json.loads(l) for l in (data_dir / "theme" / "gutenberg_chunks.jsonl").read_text().splitlines()]
    assert {c["source_id"] for c in chunks} == {61, 33870}
    kept_meta = result.asset_materializations_for_node("theme_chunks")[0].metadata
    kept = [json.loads(l) for l in (data_dir / "theme" / "theme_chunks.jsonl").read_text().splitlines()]
    assert kept_meta["kept"].value == len(kept) and kept_meta["total"].value == len(chunks) > len(kept) > 0
    assert all(k["keyword_counts"]["total"] >= 3 for k in kept)
    assert "| total | chunks |" in kept_meta["histogram_of_totals"].value
    assert (data_dir / "theme" / "theme_chunks_totals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preview = kept_meta["preview"]
    assert isinstance(preview, dg.TableMetadataValue) and len(preview.records) == min(10, len(kept))
    assert preview.records[0].data["chunk_id"] == kept[0]["chunk_id"]
    assert preview.records[0].data["keywords"] == str(kept[0]["keyword_counts"]["total"])


def test_all_books_bad_fails_clearly(data_dir, tmp_path):
    (tmp_path / "pg61.txt").write_bytes(b"")
    run_config = {"ops": {"gutenberg_books": {"config": {"local_dir": str(tmp_path), "ids": [61]}}}}
    with pytest.raises(dg.Failure, match="no usable books"):
        dg.materialize([theme.gutenberg_books], resources=_resources(), run_config=run_config)


def test_the_splits_read_only_theme_chatml_and_all_ancestors_reach_the_books():
    placeholders = {k: dg.ResourceDefinition.none_resource() for k in ("llm", "catalog", "compute", "hub")}
    graph = dg.Definitions.merge(theme.defs, dg.Definitions(resources=placeholders)).resolve_asset_graph()
    split = graph.get(dg.AssetKey("theme_chatml_val"))
    assert {k.to_user_string() for k in split.parent_keys} == {"theme_chatml"}
    chain = {k.to_user_string() for k in dg.AssetSelection.from_string("*theme_chatml_val").resolve(graph)}
    assert {"gutenberg_books", "gutenberg_chunks", "theme_chunks", "theme_chatml", "theme_chatml_val"} <= chain
