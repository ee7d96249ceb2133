"""The poetry data assets on the real local LLM (SmolLM2 via llama.cpp), real resources and IO manager.

Volumes are cut to one or two requests per task through a copied config folder, so this stays small.
"""

import shutil

import dagster as dg
import pytest
import yaml

from assets import poetry
from distillery_assets.catalog import Catalog
from distillery_assets.io import read_jsonl
from distillery_assets.paths import config_dir
from resources import build_resources

TINY = {"good_poems": 1, "bad_poems": 1, "critiques": 1, "briefs": 1, "comparisons": 1, "autopsies": 1,
        "dialogues": 1, "lessons": 1, "poet_pairs": 1, "max_tokens": 32, "poem_max_tokens": 32}
FIELDS = {"critique": "critique", "brief": "brief", "comparison": "comparison", "autopsy": "autopsy",
          "dialogue": "follow_up", "lesson": "lesson", "poet_pair": "poem"}


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    dest = tmp_path / "config"
    shutil.copytree(config_dir(), dest)
    pipeline = dest / "poetry" / "pipeline.yaml"
    cfg = yaml.safe_load(pipeline.read_text())
    cfg["profiles"]["small"].update(TINY)
    pipeline.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DISTILLERY_CONFIG_DIR", str(dest))
    monkeypatch.setenv("DISTILLERY_POETRY_PROFILE", "small")
    monkeypatch.setenv("DISTILLERY_LLM_PROVIDER", "local")
    return dest


@pytest.mark.e2e
def test_teaching_data_on_the_local_model_and_rerun_is_served_from_cache(data_dir, tiny_config):
    selection = [poetry.poetry_good_poems, poetry.poetry_bad_poems, poetry.poetry_critiques, poetry.poetry_briefs,
                 poetry.poetry_comparisons, poetry.poetry_autopsies, poetry.poetry_dialogues, poetry.poetry_lessons,
                 poetry.poetry_poet_pairs]
    resources = build_resources()
    first = dg.materialize(selection + poetry.GATE_CHECKS, resources=resources)
    assert first.success
    gen = data_dir / "poetry" / "generated"
    for task, field in FIELDS.items():
        records = read_jsonl(gen / f"{task}.jsonl")
        rejects = read_jsonl(data_dir / "poetry" / "rejects" / f"{task}.jsonl")
        assert len(records) + len(rejects) >= 1, task
        assert all(isinstance(r[field], str) and r[field].strip() for r in records), task  # never an empty field
    assert len(read_jsonl(gen / "bad_poems.jsonl")) == 1  # written by the model: data/inputs has no bad poems
    catalog = Catalog(data_dir / "catalog.duckdb")
    paid = catalog.query("select count(*) as n from llm_calls where not cached")[0]["n"]
    # bad, critique, brief, comparison, autopsy, lesson, pair, dialogue revision (+ follow-up if the revision came back)
    assert paid >= 8

    second = dg.materialize(selection, resources=resources)
    assert second.success
    assert catalog.query("select count(*) as n from llm_calls where not cached")[0]["n"] == paid  # nothing paid twice
    assert catalog.query("select count(*) as n from llm_calls where cached")[0]["n"] == paid
