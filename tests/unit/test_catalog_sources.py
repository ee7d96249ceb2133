"""Sources: edited files under the inputs and config folders become the leaves of every lineage."""

import hashlib
import json
from pathlib import Path

import pytest

from distillery_assets.catalog import Catalog, InputRef
from distillery_assets.catalog.cli import main
from distillery_assets.catalog.sources import source_key, visible_files


@pytest.fixture
def folders(data_dir, tmp_path, monkeypatch):
    """Inputs and config outside the data directory, as in a checkout with a custom DISTILLERY_DATA_DIR."""
    inputs, config = tmp_path / "inputs", tmp_path / "config"
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(inputs))
    monkeypatch.setenv("DISTILLERY_CONFIG_DIR", str(config))
    _write(inputs / "poetry" / "requests.txt", "a poem about rain\n")
    _write(inputs / "poetry" / "good" / "a.txt", "poem a")
    _write(inputs / "poetry" / "good" / "sub" / "b.jsonl", '{"text": "poem b"}\n')
    _write(inputs / "poetry" / "good" / ".notes.swp", "editor junk")
    _write(config / "poetry" / "persona.md", "the educator")
    return inputs, config


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources(cat: Catalog) -> list[dict]:
    return cat.query("SELECT asset_key, path, sha256, bytes FROM artifacts WHERE starts_with(asset_key, 'source:') "
                     "ORDER BY id")


def _chain(cat: Catalog, data_dir: Path, inputs: Path, config: Path, run: str) -> None:
    """briefs <- requests.txt, persona.md, good/ ; pairs <- briefs ; poet_gguf <- pairs."""
    briefs = _write(data_dir / "poetry" / "briefs.jsonl", '{"brief": 1}\n')
    pairs = _write(data_dir / "poetry" / "pairs.jsonl", '{"pair": 1}\n')
    gguf = _write(data_dir / "models" / "poet.gguf", "gguf")
    cat.record_artifact(asset_key="poetry_briefs", path=briefs, run_id=run,
                        inputs=[inputs / "poetry" / "requests.txt", config / "poetry" / "persona.md",
                                inputs / "poetry" / "good"])
    cat.record_artifact(asset_key="poetry_poet_pairs", path=pairs, run_id=run,
                        inputs=[InputRef(briefs, "poetry_briefs")])
    cat.record_artifact(asset_key="poet_gguf", path=gguf, run_id=run, inputs=[pairs])


def test_source_keys_name_the_folder_and_the_relative_path(tmp_path):
    roots = {"inputs": tmp_path / "in", "config": tmp_path / "in" / "cfg"}
    assert source_key(tmp_path / "in" / "poetry" / "x.txt", roots) == "source:inputs/poetry/x.txt"
    assert source_key(tmp_path / "in" / "cfg" / "p.yaml", roots) == "source:config/p.yaml"  # most specific wins
    assert source_key(tmp_path / "elsewhere.txt", roots) is None


def test_visible_files_expand_folders_skip_dot_files_and_missing_paths(folders):
    inputs, _ = folders
    good = inputs / "poetry" / "good"
    got = visible_files([good, good / "a.txt", inputs / "poetry" / "bad"])
    assert got == [good / "a.txt", good / "sub" / "b.jsonl"]


def test_lineage_walks_transitively_down_to_the_edited_files(data_dir, folders):
    inputs, config = folders
    cat = Catalog()
    _chain(cat, data_dir, inputs, config, "r1")
    edges = {(r["depth"], r["asset_key"], r["input_asset_key"]) for r in cat.lineage("poet_gguf")}
    assert edges == {
        (1, "poet_gguf", "poetry_poet_pairs"),
        (2, "poetry_poet_pairs", "poetry_briefs"),
        (3, "poetry_briefs", "source:inputs/poetry/requests.txt"),
        (3, "poetry_briefs", "source:config/poetry/persona.md"),
        (3, "poetry_briefs", "source:inputs/poetry/good/a.txt"),
        (3, "poetry_briefs", "source:inputs/poetry/good/sub/b.jsonl"),
    }
    leaves = {r["source"]: r for r in cat.lineage_sources("poet_gguf")}
    requests = inputs / "poetry" / "requests.txt"
    assert sorted(leaves) == ["source:config/poetry/persona.md", "source:inputs/poetry/good/a.txt",
                              "source:inputs/poetry/good/sub/b.jsonl", "source:inputs/poetry/requests.txt"]
    row = leaves["source:inputs/poetry/requests.txt"]
    assert (row["path"], row["sha256"], row["bytes"], row["read_by"], row["now"]) == (
        requests.resolve().as_posix(), _sha(requests), requests.stat().st_size, "poetry_briefs", "unchanged")
    # the reverse question works from a raw file too
    assert {r["asset_key"] for r in cat.derived_from(str(requests))} == {"poetry_briefs", "poetry_poet_pairs",
                                                                          "poet_gguf"}


def test_unchanged_source_is_one_row_and_an_edit_adds_a_row_with_the_new_sha(data_dir, folders):
    inputs, config = folders
    cat = Catalog()
    _chain(cat, data_dir, inputs, config, "r1")
    _chain(cat, data_dir, inputs, config, "r2")  # same files read again by a second run
    first = _sources(cat)
    assert len(first) == 4
    requests = inputs / "poetry" / "requests.txt"

    _write(requests, "a poem about rain\na poem about snow\n")
    assert [r["now"] for r in cat.lineage_sources("poet_gguf") if r["source"].endswith("requests.txt")] == ["edited"]
    _chain(cat, data_dir, inputs, config, "r3")
    rows = [r for r in _sources(cat) if r["asset_key"] == "source:inputs/poetry/requests.txt"]
    assert [r["sha256"] for r in rows] == [first[0]["sha256"], _sha(requests)]
    [leaf] = [r for r in cat.lineage_sources("poet_gguf") if r["source"].endswith("requests.txt")]
    assert (leaf["sha256"], leaf["now"]) == (_sha(requests), "unchanged")  # the newest model read the new version
    assert len(_sources(cat)) == 5


def test_data_dir_inputs_are_not_sources_and_verify_skips_sources(data_dir, folders):
    inputs, config = folders
    cat = Catalog()
    _chain(cat, data_dir, inputs, config, "r1")
    pairs = cat.latest_artifact("poetry_poet_pairs", None)
    assert [i["input_asset_key"] for i in cat.artifact_inputs(pairs["id"])] == ["poetry_briefs"]
    _write(config / "poetry" / "persona.md", "edited by a person")
    assert {r["asset_key"] for r in cat.verify()} == {"poetry_briefs", "poetry_poet_pairs", "poet_gguf"}
    assert all(r["status"] == "ok" for r in cat.verify())
    assert cat.verify("source:config/poetry/persona.md")[0]["status"] == "changed"


def test_cli_prints_the_edited_files_with_path_and_full_sha(data_dir, folders, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    inputs, config = folders
    _chain(Catalog(), data_dir, inputs, config, "r1")
    assert main(["lineage", "poet_gguf"]) == 0
    out = capsys.readouterr().out
    assert "lineage of poet_gguf (6 rows)" in out and "edited files behind poet_gguf (4 rows)" in out
    assert "inputs/poetry/requests.txt" in out and _sha(inputs / "poetry" / "requests.txt") in out
    assert max(len(line) for line in out.splitlines()) > 80  # piped: tables keep their natural width
    assert main(["--json", "lineage", "--sources", "poet_gguf"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["source"] for r in rows} >= {"source:config/poetry/persona.md"}
    assert all(len(r["sha256"]) == 64 and r["now"] == "unchanged" for r in rows)
