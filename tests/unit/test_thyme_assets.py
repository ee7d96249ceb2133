"""The ``distillery`` experiment's corpus: the platform's own ``.corpus`` files and theme chunks, with
catalogue edges back to the prompts.txt behind each file; a clear failure naming the assets to materialize
first when those documents do not exist yet."""

import json

import dagster as dg
import pytest

from assets.thyme import thyme_corpus
from distillery_assets.catalog import Catalog, InputRef
from distillery_assets.partitions import thyme_experiment_partitions
from distillery_assets.thyme.experiments import experiment_names
from resources.catalog import CatalogResource

STORY = "Once the lighthouse keeper had counted every ship, she wrote their names in the sand.\n\n" * 8


@pytest.fixture(autouse=True)
def _default_corpus_root(monkeypatch):
    monkeypatch.delenv("DISTILLERY_CORPUS_ROOT", raising=False)  # the corpus lives under the test's data dir


def _run():
    return dg.materialize([thyme_corpus], partition_key="distillery", resources={"catalog": CatalogResource()},
                          raise_on_error=False)


def test_every_experiment_file_is_a_partition():
    assert thyme_experiment_partitions.get_partition_keys() == experiment_names()
    assert {"books-seed", "books-transformer", "books-cpu", "corpus-seed", "distillery"} <= set(experiment_names())


def test_without_platform_documents_the_asset_says_what_to_materialize_first(data_dir):
    result = _run()
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "story_corpus" in failure and "encyclopedia_corpus" in failure and ".corpus" in failure
    assert not (data_dir / "thyme" / "distillery" / "corpus").exists()


def test_platform_corpus_edges_reach_the_prompts(data_dir):
    cat = Catalog(data_dir / "catalog.duckdb")
    leaf = data_dir / "corpus" / "stories" / "200-400w" / "sea"
    leaf.mkdir(parents=True)
    prompts = leaf / "prompts.txt"
    prompts.write_text("A lighthouse keeper counts ships\n", encoding="utf-8")
    cat.record_artifact(asset_key="story_prompts", path=prompts, partition="200-400w")
    doc = leaf / "lighthouse.corpus"
    doc.write_text(STORY, encoding="utf-8")
    cat.record_artifact(asset_key="story_corpus", path=doc, partition="200-400w",
                        inputs=[InputRef(prompts, "story_prompts")])
    chunks = data_dir / "theme" / "theme_chunks.jsonl"
    chunks.parent.mkdir(parents=True)
    chunks.write_text(json.dumps({"chunk_id": "32-1", "text": "Herland had no men. " * 40}) + "\n", encoding="utf-8")
    cat.record_artifact(asset_key="theme_chunks", path=chunks)

    result = _run()
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("thyme_corpus")[0].metadata.items()}
    assert meta["documents"] == 2 and meta["by_source"] == {"corpus": 1, "theme_chunks": 1}
    edges = Catalog(data_dir / "catalog.duckdb", read_only=True).lineage("thyme_corpus")
    inputs = {(r["input_asset_key"], r["input_path"].rsplit("/", 1)[-1]) for r in edges}
    assert ("story_corpus", "lighthouse.corpus") in inputs and ("theme_chunks", "theme_chunks.jsonl") in inputs
    assert ("story_prompts", "prompts.txt") in inputs  # one level further: the prompts behind the document
    assert any(r["input_asset_key"] == "source:config/thyme/distillery.yaml" for r in edges)


def test_books_seed_dataset_page_shows_the_seeds_chunk_counts(data_dir):
    """corpus -> tokenizer -> dataset for books-seed (about 15 s): the page shows the seed's 8,015 chunks
    (7,213 / 802, see test_thyme_seed_data.py) and the packing rule in words; a second run reuses all three."""
    from assets.thyme import thyme_dataset, thyme_tokenizer

    def run():
        result = dg.materialize([thyme_corpus, thyme_tokenizer, thyme_dataset], partition_key="books-seed",
                                resources={"catalog": CatalogResource()})
        return {k: v.value for k, v in result.asset_materializations_for_node("thyme_dataset")[0].metadata.items()}

    meta = run()
    assert (meta["chunks"], meta["train_chunks"], meta["val_chunks"]) == (8015, 7213, 802)
    assert "joined by one space" in meta["chunking"] and "< 500" in meta["chunking"]
    assert meta["steps_per_epoch"] == -(-meta["train_windows"] // 32) and meta["reused"] is False
    assert run()["reused"] is True


def test_a_model_stopped_by_its_patience_counts_as_finished():
    from types import SimpleNamespace

    from assets.thyme import _finished_check
    from distillery_assets.thyme.experiments import load_experiment

    exp = load_experiment("books-transformer")
    assert exp.training.patience == 3
    epochs = [{"epoch": i} for i in range(1, 9)]
    stopped = SimpleNamespace(epochs=epochs, steps=2416, best_val_loss=4.6,
                              stopped_early={"epoch": 8, "best_epoch": 5, "patience": 3})
    check = _finished_check(exp, {"transformer": stopped})
    assert check.passed and "stopped by patience 3; best epoch 5" in check.metadata["models"].value
    cut = SimpleNamespace(epochs=epochs, steps=2416, best_val_loss=4.6, stopped_early=None)  # killed, not stopped
    assert not _finished_check(exp, {"transformer": cut}).passed
