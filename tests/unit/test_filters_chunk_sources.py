"""The Gutenberg chunk assets are Dagster dependencies of every filter version (the union of what the versions
read), but a version whose sources do not read them says so on its page and does not name them among its
catalogue inputs; a version that reads them does both the other way round. Shipped versions: passage_voice.v1
(a JSONL file of articles only) and deep_red_theme.v1 (gutenberg_chunks)."""

import dagster as dg

from assets import filters, theme
from distillery_assets.catalog import Catalog
from distillery_assets.filters import pipeline
from distillery_assets.filters.config import load_filter
from distillery_assets.filters.paths import FilterPaths


def _resources():
    from io_managers.files import DistilleryIOManager
    from resources.catalog import CatalogResource

    catalog = CatalogResource()
    return {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog)}


def _candidates(instance, key: str) -> tuple[dict, set[str]]:
    result = dg.materialize([filters.filter_candidates], partition_key=key, resources=_resources(), instance=instance)
    assert result.success
    [mat] = result.asset_materializations_for_node("filter_candidates")
    catalog = Catalog()
    rows = catalog.query("SELECT id FROM artifacts WHERE asset_key = 'filter_candidates' AND partition = ? "
                         "AND run_id = ?", [key, result.run_id])
    assert rows
    read = {r["input_asset_key"] or "" for row in rows for r in catalog.artifact_inputs(row["id"])}
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}, read


def test_chunk_sources_named_and_catalogued_only_where_read(data_dir):
    assert "gutenberg_chunks" in filters.SOURCE_ASSETS  # the edge every version has
    with dg.instance_for_test() as instance:
        made = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks], resources=_resources(),
                              instance=instance,
                              run_config={"ops": {"gutenberg_books": {"config": {"ids": [61, 33870]}}}})
        assert made.success  # a catalogued chunk file that a version could claim to have read

        meta, inputs = _candidates(instance, "passage_voice.v1")
        assert "gutenberg_chunks" not in inputs
        assert any(key.endswith("passage_voice/v1/articles.jsonl") for key in inputs)
        assert "not read (an edge for " in meta["chunk_sources"] and "deep_red_theme.v1" in meta["chunk_sources"]
        assert "--select '+key:filter_report and group:filters' --partition passage_voice.v1" in meta["chunk_sources"]

        meta, inputs = _candidates(instance, "deep_red_theme.v1")
        assert "gutenberg_chunks" in inputs
        assert "| read |" in meta["chunk_sources"] and "--select" not in meta["chunk_sources"]

    assert pipeline.chunk_assets_read(load_filter(FilterPaths.for_key("passage_voice.v1").definition)) == []
    assert pipeline.chunk_assets_read(load_filter(FilterPaths.for_key("deep_red_theme.v1").definition)) == [
        "gutenberg_chunks"]


def test_the_selection_the_pages_give_leaves_the_theme_assets_out():
    from distillery_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    everything = {k.to_user_string() for k in dg.AssetSelection.from_string("*filter_report").resolve(graph)}
    filters_only = {k.to_user_string() for k in
                    dg.AssetSelection.from_string("+key:filter_report and group:filters").resolve(graph)}
    assert {"gutenberg_books", "gutenberg_chunks"} <= everything
    assert filters_only == everything - {"gutenberg_books", "gutenberg_chunks"}
    assert {"filter_candidates", "filter_model", "filter_report"} <= filters_only
