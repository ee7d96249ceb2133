"""The poetry data assets on the real local LLM (SmolLM2 via llama.cpp), real resources and IO manager.

Volumes are cut to one or two requests per task through a copied config folder, so this stays small.
"""

import shutil

import dagster as dg
import pytest
import yaml

from assets import poetry
from distillery_assets.catalog import Catalog
from distillery_assets.definitions import build_resources
from distillery_assets.io import read_jsonl
from distillery_assets.paths import config_dir

TINY = {"good_poems": 1, "bad_poems": 1, "critiques": 1, "briefs": 1, "comparisons": 1, "autopsies": 1,
        "dialogues": 1, "lessons": 1, "poet_pairs": 1, "verse_pairs": 1, "max_tokens": 128,
        "poem_max_tokens": 96}  # a cut-off reply is no record
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
        if task == "dialogue" and not read_jsonl(gen / "critique.jsonl"):
            continue  # a dialogue revises a critique: none came back whole, so there is nothing to ask
        assert len(records) + len(rejects) >= 1, task
        assert all(isinstance(r[field], str) and r[field].strip() for r in records), task  # never an empty field
        # a reply cut off at max_tokens is a reject with its reason, never a record
        assert all("finish_reason=length" in r["reason"] for r in rejects if "cut off" in r["reason"]), task
    assert len(read_jsonl(gen / "bad_poems.jsonl")) + len(read_jsonl(data_dir / "poetry" / "rejects" /
                                                                     "bad_poems.jsonl")) == 1  # asked of the model
    catalog = Catalog(data_dir / "catalog.duckdb")
    first_ok = {r["request_key"] for r in catalog.query("select request_key from llm_calls where ok and not cached")}
    paid = catalog.query("select count(*) as n from llm_calls where not cached")[0]["n"]
    # bad, critique, brief, comparison, autopsy, lesson, pair (+ the dialogue's calls if a critique came back)
    assert paid >= 7

    second = dg.materialize(selection, resources=resources, raise_on_error=False)
    paid_twice = catalog.query("select request_key from llm_calls where ok and not cached group by 1 having count(*) > 1")
    assert paid_twice == []  # nothing that came back whole was paid for again
    rows = {r["request_key"]: r["n"] for r in catalog.query("select request_key, count(*) as n from llm_calls group by 1")}
    assert all(rows[key] == 1 for key in first_ok)  # whole answers: resumed from the task journal, not even asked
    assert second.success or any("finish_reason=length" in r["reason"] for t in FIELDS
                                 for r in read_jsonl(data_dir / "poetry" / "rejects" / f"{t}.jsonl"))
