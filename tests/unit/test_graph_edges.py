"""Issue 22, item 8: the graph has no islands that Dagster could join, and where it cannot, the asset page
says which partitions of which asset it read, linked.

* ``theme_chunks`` (unpartitioned) is a real dependency of ``thyme_corpus`` (the ``distillery`` experiment
  reads it), and ``*thyme_eval`` / ``*filter_report`` still resolve to one runnable partitioned selection.
* The corpus assets cannot be edges: with any partition mapping, ``*asset`` selects them and Dagster refuses
  a run over two partitions definitions (pinned below on a toy graph, so a Dagster that allows it shows up).
* So ``filter_candidates`` / ``filter_scores`` / ``thyme_corpus`` carry ``catalogue_upstream`` in their
  definition, and each materialization lists the corpus partitions read with links to their pages.
"""

import json

import dagster as dg
import pytest

from distillery_assets.partitions import filter_version_partitions, story_group_partitions, thyme_experiment_partitions
from resources.catalog import CatalogResource

STORY = "Once the lighthouse keeper had counted every ship, she wrote their names in the sand.\n\n" * 8
ARTICLE = ("Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. Plants, algae and some "
           "bacteria do it in their chloroplasts, and nearly all food on Earth starts there.\n\n") * 6


@pytest.fixture(autouse=True)
def _default_corpus_root(monkeypatch):
    monkeypatch.delenv("DISTILLERY_CORPUS_ROOT", raising=False)  # the corpus lives under the test's data dir


def _graph():
    from distillery_assets.definitions import defs

    return defs, defs.resolve_asset_graph()


def _names(keys) -> set[str]:
    return {k.to_user_string() for k in keys}


# --------------------------------------------------------------------------------------------- the graph

def test_thyme_corpus_depends_on_theme_chunks_and_no_corpus_asset():
    _, graph = _graph()
    parents = _names(graph.get(dg.AssetKey("thyme_corpus")).parent_keys)
    assert parents == {"theme_chunks"}  # the distillery experiment reads it; the corpus stays a catalogue edge


@pytest.mark.parametrize("target, partition, partitions_def", [
    ("filter_report", "educational_value.v1", filter_version_partitions),
    ("thyme_eval", "distillery", thyme_experiment_partitions),
    ("thyme_eval", "books-cpu", thyme_experiment_partitions),
])
def test_readme_selections_stay_one_run(target, partition, partitions_def):
    """What ``dagster asset materialize --select '*<target>' --partition <p>`` does before launching
    (dagster/_cli/asset.py execute_materialize_command): the implicit job, then the partition validated
    against the one PartitionsDefinition of the selection."""
    defs, graph = _graph()
    keys = dg.AssetSelection.from_coercible([f"*{target}"]).resolve(graph)
    assert not _names(keys) & {"story_corpus", "encyclopedia_corpus", "story_prompts", "encyclopedia_prompts"}
    job = defs.get_repository_def().get_implicit_job_def_for_assets(keys)
    assert job._get_partitions_def(keys) == partitions_def  # noqa: SLF001 (the CLI's own check)
    assert job.get_tags_for_partition_key(partition, selected_asset_keys=keys)["dagster/partition"] == partition
    if target == "thyme_eval":
        assert {"theme_chunks", "gutenberg_chunks", "gutenberg_books"} <= _names(keys)


@pytest.mark.parametrize("mapping", [dg.AllPartitionMapping(), dg.StaticPartitionMapping({"arts": "v1"})])
def test_a_partition_mapping_cannot_join_two_partitions_definitions_in_one_run(mapping):
    """Why the corpus is a catalogue edge: ``*down`` selects the mapped upstream, and one run cannot hold
    two partitions definitions (JobDefinition._get_partitions_def: "no PartitionsDefinition shared")."""
    up_parts, down_parts = dg.StaticPartitionsDefinition(["arts"]), dg.StaticPartitionsDefinition(["v1"])

    @dg.asset(partitions_def=up_parts)
    def up():
        return None

    @dg.asset(partitions_def=down_parts, deps=[dg.AssetDep(up, partition_mapping=mapping)])
    def down():
        return None

    defs = dg.Definitions(assets=[up, down])
    keys = dg.AssetSelection.from_coercible(["*down"]).resolve(defs.resolve_asset_graph())
    assert keys == {up.key, down.key}
    job = defs.get_repository_def().get_implicit_job_def_for_assets(keys)
    with pytest.raises(Exception, match="no PartitionsDefinition shared by all the provided assets"):
        job.get_tags_for_partition_key("v1", selected_asset_keys=keys)


@pytest.mark.parametrize("asset", ["filter_candidates", "filter_scores", "thyme_corpus"])
def test_readers_name_the_corpus_in_their_definition(asset):
    defs, _ = _graph()
    spec = defs.get_assets_def(asset).specs_by_key[dg.AssetKey(asset)]
    md = spec.metadata["catalogue_upstream"]
    assert isinstance(md, dg.MarkdownMetadataValue)
    assert "[story_corpus](/assets/story_corpus)" in md.value
    assert "[encyclopedia_corpus](/assets/encyclopedia_corpus)" in md.value


# ----------------------------------------------------------------------------------- partitions of a path

def test_corpus_partition_of_a_path(tmp_path):
    from distillery_assets.partitions import asset_url, corpus_partition_of, corpus_partitions_read

    root = tmp_path / "corpus"
    assert corpus_partition_of(root / "stories" / "200-400w" / "sea" / "a.corpus", root) == ("story_corpus", "200-400w")
    assert corpus_partition_of(root / "encyclopedia" / "arts" / "music" / "b.corpus", root) == (
        "encyclopedia_corpus", "arts")
    assert corpus_partition_of(root / "encyclopedia" / "not-a-category" / "x" / "c.corpus", root) is None
    assert corpus_partition_of(tmp_path / "elsewhere" / "d.corpus", root) is None
    counts = corpus_partitions_read([root / "stories" / "200-400w" / "sea" / "a.corpus"], root, ["story_corpus"])
    assert list(counts) == ["story_corpus"]
    assert counts["story_corpus"] == {k: int(k == "200-400w") for k in story_group_partitions.get_partition_keys()}
    assert asset_url("story_corpus", "200-400w") == "/assets/story_corpus?view=partitions&partition=200-400w"


# ------------------------------------------------------------------------------- what the pages say

def _write_corpus(data_dir):
    root = data_dir / "corpus"
    files = {("stories", "200-400w", "sea"): STORY, ("stories", "400-700w", "hill"): STORY,
             ("encyclopedia", "science", "biology"): ARTICLE}
    for (half, part, leaf), text in files.items():
        folder = root / half / part / leaf
        folder.mkdir(parents=True)
        (folder / f"{leaf}_one.corpus").write_text(text, encoding="utf-8")
    (root / "stories" / "200-400w" / "sea" / "sea_two.corpus").write_text(STORY.replace("ship", "boat"),
                                                                            encoding="utf-8")
    return root


def _write_chunks(data_dir):
    chunks = data_dir / "theme" / "gutenberg_chunks.jsonl"
    chunks.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"chunk_id": f"32-{i}", "source_title": "Herland", "text": f"Herland had no men, chunk {i}. " * 40}
            for i in range(4)]
    chunks.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (data_dir / "theme" / "theme_chunks.jsonl").write_text(chunks.read_text(), encoding="utf-8")


def _meta(result, node: str) -> dict:
    return dict(result.asset_materializations_for_node(node)[0].metadata)


def _assert_reads(meta: dict, *, documents: bool):
    assert meta["corpus_partitions_read"].value == {"story_corpus": {"200-400w": 2, "400-700w": 1},
                                                    "encyclopedia_corpus": {"science": 1}}
    story = meta["read story_corpus"]
    assert isinstance(story, dg.MarkdownMetadataValue)
    assert "2 of 5 partitions of [story_corpus](/assets/story_corpus), 3 `.corpus` files" in story.value
    assert "| [200-400w](/assets/story_corpus?view=partitions&partition=200-400w) | 2 |" in story.value
    assert "[1800-2500w](/assets/story_corpus?view=partitions&partition=1800-2500w)" in story.value  # not read yet
    encyclopedia = meta["read encyclopedia_corpus"].value
    assert "[science](/assets/encyclopedia_corpus?view=partitions&partition=science) | 1 |" in encyclopedia
    assert ("documents kept" in story.value) == documents
    assert len(encyclopedia) < 1000 and len(story.value) < 1000  # shown in place, not behind "Show Markdown"


def test_thyme_corpus_page_lists_the_corpus_partitions_read(data_dir):
    _write_corpus(data_dir)
    _write_chunks(data_dir)
    from distillery_assets.catalog import Catalog
    Catalog(data_dir / "catalog.duckdb").record_artifact(asset_key="theme_chunks",
                                                          path=data_dir / "theme" / "theme_chunks.jsonl")
    from assets.thyme import thyme_corpus

    result = dg.materialize([thyme_corpus], partition_key="distillery", resources={"catalog": CatalogResource()})
    _assert_reads(_meta(result, "thyme_corpus"), documents=False)


def test_filter_candidates_page_lists_the_corpus_partitions_read(data_dir):
    _write_corpus(data_dir)
    _write_chunks(data_dir)
    from assets.filters import filter_candidates

    result = dg.materialize([filter_candidates], partition_key="educational_value.v1",
                            resources={"catalog": CatalogResource()})
    meta = _meta(result, "filter_candidates")
    _assert_reads(meta, documents=True)
    assert "| [200-400w](/assets/story_corpus?view=partitions&partition=200-400w) | 2 | 2 |" in meta[
        "read story_corpus"].value
