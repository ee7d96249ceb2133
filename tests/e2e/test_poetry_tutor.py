"""The tutor CLI on real GGUF files (the embedded SmolLM2 stands in for both fine-tunes)."""

import json
import os
import subprocess
import sys

import pytest

from distillery_assets.embedded import smollm2_gguf_path
from distillery_assets.paths import repo_root


@pytest.mark.e2e
def test_cli_runs_brief_draft_and_a_critique_round_ending_on_end_of_turn(data_dir, tmp_path):
    gguf = str(smollm2_gguf_path())
    out = tmp_path / "sessions.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "distillery_assets.poetry.tutor", "Write a poem about winter light",
         "--educator", gguf, "--poet", gguf, "--max-revisions", "1", "--json", str(out)],
        cwd=repo_root(), capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FINAL POEM (" in proc.stdout and "CRITIQUE 1 (educator)" in proc.stdout  # the terminal view
    session = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert session["metadata"]["critique_rounds"] == 1
    steps = session["metadata"]["steps"]
    assert [s["model"] for s in steps[:3]] == ["educator", "poet", "educator"]
    assert all(s["chars"] > 0 for s in steps)
    # generation stops on the chat template's end-of-turn for most replies (a 135M model may ramble to the cap)
    assert sum(s["finish_reason"] == "stop" for s in steps) >= len(steps) // 2
    assert session["final_poem"] and session["educator_note"]


@pytest.mark.e2e
def test_cli_without_models_says_what_to_do(data_dir):
    proc = subprocess.run([sys.executable, "-m", "distillery_assets.poetry.tutor", "x"], cwd=repo_root(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "materialize educator_gguf" in proc.stderr
