"""The filters' Dagster wiring: one partition per shipped version, every asset in group ``filters`` on that
partitions definition, the documents' upstream a real dependency, and ``*filter_report`` one runnable job
for a filter partition (what ``dagster asset materialize --select '*filter_report' --partition <key>`` needs)."""

import dagster as dg

from assets import filters
from distillery_assets.filters.paths import filter_versions
from distillery_assets.partitions import filter_version_partitions


def test_one_partition_per_version_folder():
    keys = filter_version_partitions.get_partition_keys()
    assert keys == [v.key for v in filter_versions()]
    assert {"educational_value.v1", "deep_red_theme.v1", "deep_red_theme.v2"} <= set(keys)


def test_assets_are_partitioned_per_version_in_group_filters():
    for a in filters.ASSETS:
        assert a.partitions_def == filter_version_partitions, a.key
        assert a.group_names_by_key[a.key] == "filters"


def test_source_assets_are_dependencies_and_report_chain_is_one_job():
    from distillery_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("filter_candidates")).parent_keys}
    assert "gutenberg_chunks" in parents  # both shipped filters read the theme pipeline's chunks
    assert not parents & {"story_corpus", "encyclopedia_corpus"}  # partitioned otherwise: catalogue edges only
    keys = dg.AssetSelection.assets("filter_report").upstream().resolve(graph)
    assert {"gutenberg_books", "gutenberg_chunks", "filter_model", "filter_ground_truth"} <= {
        k.to_user_string() for k in keys}
    job = defs.get_repository_def().get_implicit_job_def_for_assets(keys)
    assert job is not None  # every selected asset is unpartitioned or partitioned by filter version
    assert "filter_oracle_agreement" not in {k.to_user_string() for k in keys}  # a second oracle is opt-in
