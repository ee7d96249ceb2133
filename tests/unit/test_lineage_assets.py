"""Each pipeline's assets record the edited files they read, so the catalogue's lineage reaches them:
poetry (poems, requests, persona and prompt config), theme (books, keyword and generator config), corpus
(prompt tables). Materialized in process with the real IO manager and catalogue."""

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets import corpus, poetry, theme
from distillery_assets.catalog import Catalog
from distillery_assets.corpus.tables import default_tables_path
from distillery_assets.paths import config_dir, inputs_dir, repo_root
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource

from .test_corpus_assets import run as run_corpus
from .test_poetry_assets import scripted_poetry_llm


def _resources(**extra):
    catalog = CatalogResource()
    return {"catalog": catalog, "io_manager": DistilleryIOManager(catalog=catalog), **extra}


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _leaves(asset: str) -> dict[str, dict]:
    return {row["source"]: row for row in Catalog().lineage_sources(asset)}


def test_poetry_lineage_reaches_poems_requests_and_config(data_dir):
    result = dg.materialize([poetry.poetry_good_poems, poetry.poetry_briefs, poetry.poetry_poet_pairs],
                            resources=_resources(llm=scripted_poetry_llm()))
    assert result.success
    good = _leaves("poetry_good_poems")
    poems = sorted(p for p in (inputs_dir() / "poetry" / "good").iterdir() if p.is_file())
    assert {f"source:inputs/poetry/good/{p.name}" for p in poems} <= set(good)
    assert "source:config/poetry/pipeline.yaml" in good

    pairs = _leaves("poetry_poet_pairs")  # transitively: the pairs were made from the briefs
    requests = pairs["source:inputs/poetry/requests.txt"]
    assert (requests["sha256"], requests["read_by"], requests["now"]) == (
        _sha(inputs_dir() / "poetry" / "requests.txt"), "poetry_briefs", "unchanged")
    assert pairs["source:config/poetry/poet_system.txt"]["read_by"] == "poetry_poet_pairs"
    assert pairs["source:config/poetry/prompts.yaml"]["read_by"] == "poetry_briefs, poetry_poet_pairs"
    meta = result.asset_materializations_for_node("poetry_briefs")[0].metadata
    assert any(path.endswith("requests.txt") for path in meta["inputs"].value)


@pytest.fixture
def gutenberg_inputs(tmp_path, monkeypatch):
    """An inputs folder of our own with two of the sample books (one gets edited below)."""
    folder = tmp_path / "inputs" / "gutenberg"
    folder.mkdir(parents=True)
    sample = repo_root() / "data" / "inputs" / "gutenberg"
    for name in ("manifest.jsonl", "pg61.txt", "pg33870.txt"):
        shutil.copy(sample / name, folder / name)
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(tmp_path / "inputs"))
    return folder


def test_theme_lineage_reaches_the_books_and_keyword_config_and_tracks_an_edited_book(data_dir, gutenberg_inputs):
    run_config = {"ops": {"gutenberg_books": {"config": {"ids": [61, 33870]}}}}
    selection = [theme.gutenberg_books, theme.gutenberg_chunks, theme.theme_chunks]
    assert dg.materialize(selection, resources=_resources(), run_config=run_config).success
    leaves = _leaves("theme_chunks")
    assert set(leaves) == {"source:inputs/gutenberg/manifest.jsonl", "source:inputs/gutenberg/pg61.txt",
                           "source:inputs/gutenberg/pg33870.txt", "source:config/theme/books.json",
                           "source:config/theme/theme_keywords.json"}
    assert leaves["source:inputs/gutenberg/pg61.txt"]["read_by"] == "gutenberg_books"
    assert leaves["source:config/theme/theme_keywords.json"]["sha256"] == _sha(
        config_dir() / "theme" / "theme_keywords.json")

    book = gutenberg_inputs / "pg61.txt"
    book.write_text(book.read_text(encoding="utf-8") + "\nA line added by hand.\n", encoding="utf-8")
    assert _leaves("theme_chunks")["source:inputs/gutenberg/pg61.txt"]["now"] == "edited"
    assert dg.materialize(selection, resources=_resources(), run_config=run_config).success
    rows = Catalog().query("SELECT asset_key, sha256 FROM artifacts WHERE starts_with(asset_key, 'source:') "
                           "ORDER BY id")
    per_key: dict[str, list[str]] = {}
    for row in rows:
        per_key.setdefault(row["asset_key"], []).append(row["sha256"])
    assert len(per_key["source:inputs/gutenberg/pg61.txt"]) == 2  # the edit: one more row, new sha256
    assert per_key["source:inputs/gutenberg/pg61.txt"][-1] == _sha(book)
    assert all(len(v) == 1 for k, v in per_key.items() if not k.endswith("pg61.txt"))  # the rest: no duplicates
    assert _leaves("theme_chunks")["source:inputs/gutenberg/pg61.txt"]["now"] == "unchanged"


def test_corpus_lineage_reaches_the_prompt_tables(data_dir):
    assert run_corpus([corpus.story_prompts], partition="200-400w").success
    assert run_corpus([corpus.encyclopedia_prompts], partition="mathematics").success
    assert run_corpus([corpus.encyclopedia_corpus], partition="mathematics", config={"limit": 1}).success
    tables = default_tables_path()
    for asset in ("story_prompts", "encyclopedia_corpus"):
        [leaf] = Catalog().lineage_sources(asset)
        assert (leaf["source"], leaf["sha256"]) == ("source:config/corpus/prompt_tables.yaml", _sha(tables))
    edges = {(r["asset_key"], r["input_asset_key"]) for r in Catalog().lineage("encyclopedia_corpus")}
    assert ("encyclopedia_corpus", "encyclopedia_prompts") in edges
    assert ("encyclopedia_prompts", "source:config/corpus/prompt_tables.yaml") in edges
    [row] = Catalog().query("SELECT count(*) AS n FROM artifacts WHERE asset_key = ?",
                            ["source:config/corpus/prompt_tables.yaml"])
    assert row["n"] == 1  # read by many prompts.txt files and two runs: still one version


def test_cli_lineage_json_names_the_edited_files(data_dir, capsys):
    from distillery_assets.catalog.cli import main

    assert run_corpus([corpus.story_prompts], partition="200-400w").success
    assert main(["--json", "lineage", "--sources", "story_prompts"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["path"].endswith("corpus/prompt_tables.yaml") and row["sha256"] == _sha(default_tables_path())
