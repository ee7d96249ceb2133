"""Four processes asking the same requests at the same moment (four runs of one partition, each in its own
order), one data folder, one loopback OpenAI-compatible server: every request is answered once at the server,
and every process gets every answer (its own, or another's from the cache)."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.fakeapi.openai_compat import serve_openai_compat

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
RUN = textwrap.dedent("""
    import json, random, sys, time
    from pathlib import Path
    from distillery_assets.llm import ChatMessage, LLMRequest, LLMSettings, build_client
    from distillery_assets.llm.task import LLMTask, run_task

    base_url, go, seed, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    class Docs(LLMTask[str]):
        name = "claims_e2e"
        ordered = False
        def prompt(self, row):
            return LLMRequest(messages=[ChatMessage(role="user", content=f"Write document {row}.")], max_tokens=64)

    rows = [f"doc{i}" for i in range(n)]
    random.Random(seed).shuffle(rows)
    client = build_client(LLMSettings(provider="openai", base_url=base_url, concurrency=4,
                                      api_key_env="DISTILLERY_TEST_UNSET_KEY"))
    client.complete(LLMRequest(messages=[ChatMessage(role="user", content=f"warm-up {seed}")], max_tokens=8))
    print("ready", flush=True)
    while not go.exists():  # all four start together
        time.sleep(0.01)
    run = run_task(Docs(), rows, client)
    print(json.dumps({"texts": dict(zip(run.keys, run.records)), "failures": [f.reason for f in run.failures],
                      "cached": sum(r.cached for r in run.results.values())}))
""")


def test_four_concurrent_runs_pay_each_request_once(tmp_path):
    data, go, n = tmp_path / "data", tmp_path / "go", 12
    data.mkdir()
    env = {**os.environ, "DISTILLERY_DATA_DIR": str(data)}
    with serve_openai_compat(latency_s=0.3) as srv:
        procs = [subprocess.Popen([sys.executable, "-c", RUN, srv.base_url, str(go), str(seed), str(n)], env=env,
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed in range(4)]
        try:
            for proc in procs:
                assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-3000:]
            warm_ups = srv.request_count
            go.touch()
            outs = [proc.communicate(timeout=120) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        asked = srv.request_count - warm_ups
    results = []
    for proc, (stdout, stderr) in zip(procs, outs):
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert asked == n, f"{asked} answers paid for {n} requests"
    texts = results[0]["texts"]
    assert len(texts) == n and all(r["texts"] == texts and r["failures"] == [] for r in results)
    assert sum(r["cached"] for r in results) == 3 * n  # the other three processes read each answer from the cache
    assert not list((data / "llm_cache").rglob("*.claim"))
