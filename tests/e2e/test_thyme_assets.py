"""End to end: the thyme assets for ``books-cpu`` through the real ``dagster asset materialize`` CLI.

* ``*thyme_upload`` from an empty data folder: the eval table has ThymeLM and the transformer below the unigram
  baseline's perplexity with bits per byte beside them; without HF_TOKEN the upload sends nothing, says why, and
  its staged folder holds both models, the tokenizer, the transformer's GGUF and the card; a second run trains nothing (both finished runs
  reused, no new training rows in the catalogue's ``runs`` table, the evaluation reused too) and rebuilds nothing
  (corpus, tokenizer and dataset files untouched);
* kill -9: ``thyme_model`` is started in its own process group, SIGKILLed once a ``latest`` checkpoint is on
  disk, then materialized again: the log says it resumes from that checkpoint's step and the run finishes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillery_assets.catalog import Catalog
from distillery_assets.paths import repo_root

pytestmark = pytest.mark.e2e
DAGSTER = str(Path(sys.executable).parent / "dagster")
PARTITION = "books-cpu"


def _env(data_dir: Path) -> dict[str, str]:
    home = data_dir.parent / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ)
    env.update(DISTILLERY_DATA_DIR=str(data_dir), DAGSTER_HOME=str(home), DAGSTER_TELEMETRY_DISABLED="1",
               DISTILLERY_COMPUTE_BACKEND="local")
    return env


def _command(select: str) -> list[str]:
    run_config = {"execution": {"config": {"in_process": {}}}}
    return [DAGSTER, "asset", "materialize", "-m", "distillery_assets.definitions", "--select", select,
            "--partition", PARTITION, "--config-json", json.dumps(run_config)]


def _materialize(env: dict, select: str, timeout: int = 600) -> str:
    proc = subprocess.run(_command(select), env=env, cwd=repo_root(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _runs(data_dir: Path, kind: str) -> list[dict]:
    cat = Catalog(data_dir / "catalog.duckdb", read_only=True)
    return cat.query("SELECT name, partition, metrics FROM runs WHERE kind = ? ORDER BY id", [kind])


def test_books_cpu_eval_from_empty_data_then_a_second_run_trains_nothing(data_dir):
    env = _env(data_dir)
    env.pop("HF_TOKEN", None)
    first = _materialize(env, "*thyme_upload")
    folder = data_dir / "thyme" / PARTITION
    report = json.loads((folder / "eval" / "eval.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"unigram", "3-gram", "thyme", "transformer"}
    for key in ("thyme", "transformer"):
        assert rows[key]["ppl"] < rows["unigram"]["ppl"], rows
        assert 0 < rows[key]["bpb"] and 0 < rows[key]["ood_bpb"]
    assert len(_runs(data_dir, "train")) == 2 and len(_runs(data_dir, "eval")) == 1
    mtimes = {k: (folder / "models" / k / "model.pt").stat().st_mtime_ns for k in ("thyme", "transformer")}
    staged = folder / "upload"
    gguf = json.loads((folder / "gguf" / "transformer" / "export.json").read_text())
    gguf_name = Path(gguf["gguf_path"]).name
    assert (staged / "transformer" / gguf_name).stat().st_size == gguf["gguf_bytes"]
    assert not list((staged / "thyme").glob("*.gguf")) and (staged / "thyme" / "model.pt").exists()
    card = (staged / "README.md").read_text()
    assert "## GGUF for llama.cpp" in card and gguf_name in card and "## No GGUF for ThymeLM" in card
    assert "HF_TOKEN not set" in first, first[-4000:]

    built = {f: (folder / f).stat().st_mtime_ns for f in
             ("corpus/corpus.json", "tokenizer/tokenizer.json", "dataset/dataset.json", "dataset/train.tokens.bin")}
    again = _materialize(env, "*thyme_eval")
    assert again.count("; reused") >= 3 and "(source key " in again, again[-4000:]  # corpus, tokenizer, dataset
    assert {f: (folder / f).stat().st_mtime_ns for f in built} == built  # nothing rebuilt or re-tokenized
    assert again.count("finished run reused") == 2, again[-4000:]
    assert "resuming from step" not in again and "checkpoint at step" not in again  # nothing trained
    assert {k: (folder / "models" / k / "model.pt").stat().st_mtime_ns for k in mtimes} == mtimes
    assert len(_runs(data_dir, "train")) == 2 and len(_runs(data_dir, "eval")) == 1  # the eval was reused too
    lineage = Catalog(data_dir / "catalog.duckdb", read_only=True).lineage_sources("thyme_eval")
    sources = {r["source"] for r in lineage}
    assert "source:config/thyme/books-cpu.yaml" in sources and "source:inputs/thyme_books/alice_wonderland.txt" in sources


def test_kill_9_during_training_then_the_next_run_resumes_from_the_checkpoint(data_dir, tmp_path):
    env = _env(data_dir)
    _materialize(env, "*thyme_dataset")
    state_file = data_dir / "thyme" / PARTITION / "models" / "thyme" / "latest" / "loop_state.json"
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(_command("thyme_model"), env=env, cwd=repo_root(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 400
            while not state_file.exists():
                assert proc.poll() is None, f"the run ended before a checkpoint:\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"no checkpoint appeared:\n{log.read_text()[-4000:]}"
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    step = json.loads(state_file.read_text())["step"]  # the newest checkpoint the killed run left
    assert step > 0 and not (state_file.parents[1] / "model.json").exists()

    out = _materialize(env, "thyme_model")
    assert f"resuming from step {step}" in out, out[-4000:]
    info = json.loads((state_file.parents[1] / "model.json").read_text())
    assert info["resumed_from_step"] == step and info["steps"] > step
    history = json.loads((state_file.parents[1] / "training_history.json").read_text())
    assert [s["step"] for s in history["steps"]] == list(range(1, info["steps"] + 1))  # one curve, continued
    assert not state_file.parent.exists()  # latest/ is gone once the run is finished
