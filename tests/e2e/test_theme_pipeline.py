"""End to end: `dagster asset materialize --select '*theme_chatml_val'` on the shipped sample books.

* through the in-process local provider (SmolLM2 via llama-cpp-python), then again (all resumed);
* through a real OpenAI-compatible HTTP server: `python -m llama_cpp.server` serving SmolLM2 on 127.0.0.1,
  plus the model benchmark asset against that server;
* kill-and-resume: the ChatML step is SIGKILLed midway (fake OpenAI-compatible server, so it is quick),
  materialized again, and compared with a clean run from the same LLM cache.

Volumes are tiny (1-2 chunks, 1-2 examples each): the point is the plumbing, not SmolLM2's prose.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from distillery_assets.embedded import smollm2_gguf_path
from distillery_assets.paths import repo_root

pytestmark = pytest.mark.e2e
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    home = data_dir.parent / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_LLM_")}
    env.update(DISTILLERY_DATA_DIR=str(data_dir), DAGSTER_HOME=str(home), DAGSTER_TELEMETRY_DISABLED="1",
               DISTILLERY_LLM_N_THREADS="2", **extra)
    return env


def _command(select: str, ops: dict) -> list[str]:
    run_config = {"execution": {"config": {"in_process": {}}}, "ops": ops}
    return [DAGSTER, "asset", "materialize", "-m", "distillery_assets.definitions", "--select", select,
            "--config-json", json.dumps(run_config)]


def _materialize(env: dict, ops: dict, select: str = "*theme_chatml_val", timeout: int = 400):
    proc = subprocess.run(_command(select, ops), env=env, cwd=repo_root(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_chain(data_dir: Path, chunks_expected: int, examples_per_chunk: int) -> dict:
    theme = data_dir / "theme"
    books = _lines(theme / "gutenberg_books.jsonl")
    assert sorted(b["id"] for b in books) == [32, 35, 61, 62, 624, 33870]
    chunks = _lines(theme / "gutenberg_chunks.jsonl")
    kept = _lines(theme / "theme_chunks.jsonl")
    assert len(chunks) > 1000 and 0 < len(kept) < len(chunks)
    assert all(c["keyword_counts"]["total"] >= 2 for c in kept)
    stats = json.loads((theme / "theme_chatml.stats.json").read_text())
    assert stats["chunks_selected"] == chunks_expected
    assert stats["examples_kept"] + stats["examples_rejected"] == chunks_expected * examples_per_chunk
    examples = _lines(theme / "theme_chatml.jsonl")
    assert len(examples) == stats["examples_kept"]
    first_ids = {c["chunk_id"] for c in kept[:chunks_expected]}
    assert all(e["metadata"]["chunk_id"] in first_ids for e in examples)
    val = _lines(theme / "theme_chatml_val.jsonl")
    assert len(val) == len(examples) - int(len(examples) * 0.9)
    rejects = _lines(theme / "theme_chatml.rejects.jsonl")
    assert len(rejects) == stats["examples_rejected"] and all(r["reason"] for r in rejects)
    return stats


def test_local_provider_then_rerun_resumes(data_dir):
    env = _env(data_dir, DISTILLERY_LLM_PROVIDER="local")
    ops = {"theme_chatml": {"config": {"max_chunks": 1, "examples_per_chunk": 1, "max_tokens": 160, "max_passage_chars": 400}}}
    _materialize(env, ops)
    stats = _check_chain(data_dir, 1, 1)
    assert stats["chunks_processed"] == 1 and stats["llm_calls"] == 1
    first = (data_dir / "theme" / "theme_chatml.jsonl").read_bytes()
    _materialize(env, ops)
    again = json.loads((data_dir / "theme" / "theme_chatml.stats.json").read_text())
    assert again["chunks_resumed_from_checkpoint"] == 1 and again["llm_calls"] == 0
    assert (data_dir / "theme" / "theme_chatml.jsonl").read_bytes() == first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def llama_server(tmp_path):
    port = _free_port()
    log = open(tmp_path / "llama_server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {(tmp_path / 'llama_server.log').read_text()[-2000:]}")
            try:
                models = httpx.get(base + "/models", timeout=2).json()["data"]
                break
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(0.2)
        else:
            pytest.fail("llama_cpp.server did not come up")
        yield base, models[0]["id"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_real_openai_compatible_server_and_model_benchmark(data_dir, llama_server):
    base, model = llama_server
    env = _env(data_dir, DISTILLERY_LLM_PROVIDER="openai", DISTILLERY_LLM_BASE_URL=base, DISTILLERY_LLM_MODEL=model)
    ops = {"theme_chatml": {"config": {"max_chunks": 1, "examples_per_chunk": 2, "max_tokens": 160, "max_passage_chars": 400}}}
    _materialize(env, ops)
    stats = _check_chain(data_dir, 1, 2)
    assert stats["llm_calls"] == 2 and stats["output_tokens"] > 0

    bench_ops = {"theme_model_benchmark": {"config": {"base_url": base, "max_tokens": 40, "evaluator_model": model}}}
    _materialize(env, bench_ops, select="theme_model_benchmark")
    result = json.loads((data_dir / "theme" / "theme_model_benchmark.json").read_text())
    [row] = result["ranked"]
    assert row["model"] == model and row["ok"] and row["output_tokens"] > 0
    assert 0 < row["ttft_s"] <= row["total_s"] and row["tokens_per_s"] > 0 and row["hours_per_1000"] > 0
    assert (row["rating"] is None and row["rating_reason"]) or 1 <= row["rating"] <= 5


def _fake_reply(messages, body):
    prompt = messages[-1]["content"]
    digest = hashlib.sha256((prompt + str(body.get("seed"))).encode()).hexdigest()
    topic = prompt.rsplit("TOPIC OF THE QUESTION:", 1)[-1].strip()
    return json.dumps({
        "user": f"Comrade machine, what should passage {digest[:10]} teach us about {topic}?",
        "assistant": ("As in a chess game, the collective of the colony must weigh science and power before "
                      f"each move; patience and shared labour decide the outcome. [{digest[:12]}]"),
    })


def test_kill_midway_then_resume_equals_uninterrupted(data_dir):
    from tests.support.fakeapi.openai_compat import serve_openai_compat

    ops = {"theme_chatml": {"config": {"max_chunks": 6, "examples_per_chunk": 2}}}
    with serve_openai_compat(reply=_fake_reply, latency_s=0.4, model="fake-gen") as srv:
        env = _env(data_dir, DISTILLERY_LLM_PROVIDER="openai", DISTILLERY_LLM_BASE_URL=srv.base_url,
                   DISTILLERY_LLM_MODEL="fake-gen", DISTILLERY_LLM_CONCURRENCY="1")
        proc = subprocess.Popen(_command("*theme_chatml_val", ops), env=env, cwd=repo_root(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        journal = None
        try:
            while proc.poll() is None:
                found = list((data_dir / "theme" / "chatml_work").glob("*/journal.jsonl"))
                if found and len(found[0].read_text().splitlines()) >= 2:
                    journal = found[0]
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert journal is not None and proc.returncode == -signal.SIGKILL, "the run was not killed midway"
        done_before = sum(1 for line in journal.read_text().split("\n")[:-1] if line.strip())  # complete lines
        assert 2 <= done_before < 12  # one journal line per finished example (6 chunks x 2)
        assert not (data_dir / "theme" / "theme_chatml.jsonl").exists()

        _materialize(env, ops)
        stats = json.loads((data_dir / "theme" / "theme_chatml.stats.json").read_text())
        assert stats["chunks_resumed_from_checkpoint"] == done_before // 2  # concurrency 1: rows finish in order
        resumed = _lines(data_dir / "theme" / "theme_chatml.jsonl")
        keys = [(e["metadata"]["chunk_id"], e["metadata"]["example_index"]) for e in resumed]
        assert len(keys) == len(set(keys)) == stats["examples_kept"] > 0
        journalled = list(dict.fromkeys(e["key"].split("#")[0] for e in _lines(journal)))
        assert journalled == [c["chunk_id"] for c in _lines(data_dir / "theme" / "theme_chunks.jsonl")[:6]]
        calls_after_resume = srv.request_count

        # a clean uninterrupted run (checkpoint and outputs removed, LLM cache kept) gives the same examples
        import shutil

        shutil.rmtree(data_dir / "theme" / "chatml_work")
        (data_dir / "theme" / "theme_chatml.jsonl").unlink()
        _materialize(env, ops)
        clean = _lines(data_dir / "theme" / "theme_chatml.jsonl")
        clean_stats = json.loads((data_dir / "theme" / "theme_chatml.stats.json").read_text())
        assert clean == resumed
        assert clean_stats["llm_calls"] == clean_stats["llm_cached_calls"] == 12  # nothing paid twice
        assert srv.request_count == calls_after_resume <= 13  # 12 requests (+1 if killed between reply and cache)
