"""Corpus pipeline end to end: the real `dagster asset materialize` CLI with the embedded SmolLM2 model, and the
real LLM resource against the local OpenAI-compatible server.

The CLI test uses a small copy of the prompt tables (2 categories, 6 mathematics prompts) so the set can be
finished within the test; prompts, file names and layout follow the same rules as the full tables.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets import corpus
from distillery_assets.catalog import Catalog
from tests.support.fakeapi.openai_compat import serve_openai_compat
from distillery_assets.paths import config_dir, repo_root
from resources.catalog import CatalogResource
from resources.llm import LLMResource

pytestmark = pytest.mark.e2e


def _small_tables(target: Path) -> None:
    raw = yaml.safe_load((config_dir() / "corpus" / "prompt_tables.yaml").read_text())
    raw["story_groups"] = {"200-400w": raw["story_groups"]["200-400w"]}
    raw["article_angles"] = [a for a in raw["article_angles"] if a["slug"] in ("introduction", "history", "beginner_guide")]
    raw["encyclopedia"] = {"mathematics": ["algebra", "geometry"], "arts": ["poetry"]}
    target.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture
def cli_env(data_dir, tmp_path):
    config = tmp_path / "config"
    shutil.copytree(config_dir(), config)
    _small_tables(config / "corpus" / "prompt_tables.yaml")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DISTILLERY_DATA_DIR": str(data_dir), "DISTILLERY_CONFIG_DIR": str(config),
           "DAGSTER_HOME": str(home), "DISTILLERY_LLM_PROVIDER": "local", "DAGSTER_TELEMETRY_DISABLED": "1",
           "DISTILLERY_LLM_N_THREADS": "1"}  # one thread: llama.cpp threads spin when the cores are shared
    env.pop("DISTILLERY_CORPUS_ROOT", None)
    return env


def dagster(env, *args, config=None) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "distillery_assets.definitions",
           *args]
    run_config = {"execution": {"config": {"in_process": {}}}}  # one process per run: quicker on 2 cores
    if config is not None:
        run_config["ops"] = {"encyclopedia_corpus": {"config": config}}
    cmd += ["--config-json", json.dumps(run_config)]
    proc = subprocess.run(cmd, cwd=repo_root(), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def runs(env) -> list:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return list(reversed(instance.get_runs()))


def test_cli_limit_resume_finished_set_and_single_run_range(cli_env, data_dir):
    root = data_dir / "corpus"
    dagster(cli_env, "--select", "encyclopedia_prompts", "--partition-range", "arts...mathematics")
    assert len(runs(cli_env)) == 1  # both categories in one run
    assert sorted(str(p.relative_to(root)) for p in root.rglob("prompts.txt")) == [
        "encyclopedia/arts/poetry/prompts.txt", "encyclopedia/mathematics/algebra/prompts.txt",
        "encyclopedia/mathematics/geometry/prompts.txt"]

    math = root / "encyclopedia" / "mathematics"
    settings = {"limit": 3, "max_tokens": 24, "accept_truncated": True}  # 24 tokens: cut off, and accepted
    select = ["--select", "encyclopedia_corpus", "--partition", "mathematics"]
    dagster(cli_env, *select, config=settings)
    first = sorted(math.rglob("*.corpus"))
    assert [p.name for p in first] == ["algebra_beginner_guide.corpus", "algebra_history.corpus",
                                       "algebra_introduction.corpus"]
    for path in first:  # real model output: non-empty UTF-8 text ending in a newline
        text = path.read_text(encoding="utf-8")
        assert text.strip() and text.endswith("\n") and not text.endswith("\n\n")
    first_bytes = [p.read_bytes() for p in first]

    dagster(cli_env, *select, config=settings)
    second = sorted(set(math.rglob("*.corpus")) - set(first))
    assert [p.name for p in second] == ["geometry_beginner_guide.corpus", "geometry_history.corpus",
                                        "geometry_introduction.corpus"]
    assert [p.read_bytes() for p in first] == first_bytes  # existing files untouched

    dagster(cli_env, *select, config=settings)  # the set is finished: nothing to ask
    all_runs = runs(cli_env)
    catalog = Catalog(data_dir / "catalog.duckdb")
    per_run = {r["run_id"]: r for r in catalog.query(
        "select run_id, count(*) as calls, sum(case when cached then 0 else 1 end) as paid "
        "from llm_calls where tag = 'encyclopedia_corpus' group by run_id")}
    assert [per_run.get(r.run_id, {}).get("paid", 0) for r in all_runs[1:]] == [3, 3, 0]
    assert len(all_runs) == 4 and all_runs[3].run_id not in per_run  # finished set: no LLM call at all


def _materialize(selection, llm, *, start, end, config=None):
    return dg.materialize(
        selection,
        resources={"llm": llm, "catalog": CatalogResource()},
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
        run_config={"ops": {"story_corpus": {"config": config}}} if config else None,
    )


def test_story_backfill_through_openai_server_with_failure_and_resume(data_dir):
    groups = corpus.story_group_partitions.get_partition_keys()
    with serve_openai_compat(latency_s=0.05, script=[("500",)]) as srv:
        llm = LLMResource(provider="openai", base_url=srv.base_url, concurrency=8, max_attempts=1,
                          api_key_env="DISTILLERY_TEST_UNSET_KEY", catalog=CatalogResource())
        assert _materialize([corpus.story_prompts], llm, start=groups[0], end=groups[-1]).success
        first = _materialize([corpus.story_corpus, *corpus._story_checks[1:]], llm, start=groups[0], end=groups[-1],
                             config={"limit": None})
        assert srv.request_count == 50 and 1 < srv.max_in_flight <= 8
        meta = {k: v.value for k, v in first.asset_materializations_for_node("story_corpus")[0].metadata.items()}
        assert (meta["generated"], meta["failed"], meta["still_missing"]) == (49, 1, 1)
        [(failed_file, reason)] = meta["failures"].items()
        assert "500" in reason or "server" in reason.lower()
        assert len(first.get_asset_materialization_events()) == 5  # one run, every story group
        evals = {e.asset_check_key.name: e.passed for e in first.get_asset_check_evaluations()}
        assert evals["files_are_prose"] is True

        second = _materialize([corpus.story_corpus], llm, start=groups[0], end=groups[-1], config={"limit": None})
        meta = {k: v.value for k, v in second.asset_materializations_for_node("story_corpus")[0].metadata.items()}
        assert srv.request_count == 51  # exactly the one that was missing
        assert (meta["generated"], meta["skipped_existing"], meta["still_missing"]) == (1, 49, 0)
        assert (data_dir / "corpus" / failed_file).exists()

        third = _materialize([corpus.story_corpus], llm, start=groups[0], end=groups[-1], config={"limit": None})
        assert third.success and srv.request_count == 51  # finished set: zero requests

        lost = data_dir / "corpus" / failed_file
        kept = lost.read_bytes()
        lost.unlink()  # a lost file comes back from the LLM cache, byte for byte, without a request
        fourth = _materialize([corpus.story_corpus], llm, start=groups[0], end=groups[-1], config={"limit": None})
        meta = {k: v.value for k, v in fourth.asset_materializations_for_node("story_corpus")[0].metadata.items()}
        assert srv.request_count == 51 and (meta["generated"], meta["llm_cache_hits"]) == (1, 1)
        assert lost.read_bytes() == kept
