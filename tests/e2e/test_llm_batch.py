"""Batch mode end to end, through the real assets, the real LLM resource and catalogue, and the loopback fakes of
the Anthropic Message Batches API and the OpenAI Batch API (official SDKs on both ends of the wire):

* a corpus partition of 100 prompts (``encyclopedia_corpus``, one category) from an empty data folder: every file
  written and catalogued, each prompt sent once, nothing online, the cost at the batch price in the metadata and
  in ``llm_calls``, the batch in ``llm_batches``; the same with 10% of the items ``errored`` or ``expired``;
* a run killed (SIGKILL) while its batch is open, then a re-run: no second submission, finished from that batch;
* a run killed after the provider accepted its batch but before the reply reached it (the batch id never
  learned), then a re-run: the batch found among the provider's batches and adopted, no second submission;
* two runs of one partition at once (two processes): each request sent once;
* the theme ChatML (Anthropic) and the filter oracle (OpenAI) in batch mode, one run each.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from assets import corpus, filters, theme
from distillery_assets.catalog import Catalog
from distillery_assets.llm.pricing import estimate_cost
from distillery_assets.paths import repo_root
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource
from resources.llm import LLMResource
from tests.support.fakeapi import serve_anthropic, serve_openai_compat
from tests.support.fakeapi.replies import fail_first

pytestmark = pytest.mark.e2e
CATEGORY = "science"  # 20 topics x 5 angles = 100 prompts
MODEL = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-5.4-mini"}
PROVIDERS = [pytest.param("anthropic", serve_anthropic, id="anthropic"),
             pytest.param("openai", serve_openai_compat, id="openai")]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("DISTILLERY_TEST_KEY", "test-key")


def _llm(provider: str, base_url: str, *, batch: bool = True) -> LLMResource:
    return LLMResource(provider=provider, base_url=base_url, api_key_env="DISTILLERY_TEST_KEY", batch=batch,
                       batch_poll_s=0.1, catalog=CatalogResource())


def _prompts(llm: LLMResource) -> None:
    assert dg.materialize([corpus.encyclopedia_prompts], partition_key=CATEGORY,
                          resources={"llm": llm, "catalog": CatalogResource()}).success


def _corpus(llm: LLMResource, **config) -> dict:
    result = dg.materialize([corpus.encyclopedia_corpus], partition_key=CATEGORY,
                            resources={"llm": llm, "catalog": CatalogResource()},
                            run_config={"ops": {"encyclopedia_corpus": {"config": {"limit": None, **config}}}})
    assert result.success
    [mat] = result.asset_materializations_for_node("encyclopedia_corpus")
    return {k: v.value for k, v in mat.metadata.items()}


def _files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "corpus" / "encyclopedia" / CATEGORY).rglob("*.corpus"))


def _check_catalogue(data_dir: Path, provider: str, batch_ids: list[str]) -> None:
    cat = Catalog(data_dir / "catalog.duckdb")
    paid = cat.query("SELECT * FROM llm_calls WHERE NOT cached AND tag = 'encyclopedia_corpus' AND ok")
    assert len(paid) == 100 and len({r["request_key"] for r in paid}) == 100
    for row in paid:  # each answer at half its online price, and its batch named
        extra = json.loads(row["extra"])
        assert set(extra["batch_ids"]) <= set(batch_ids)
        online = estimate_cost(provider, MODEL[provider], row["input_tokens"], row["output_tokens"])
        assert row["cost_usd"] == pytest.approx(online / 2, abs=1e-8)
    events = cat.query("SELECT batch_id, event FROM llm_batches ORDER BY id")
    assert {(b, "submitted") for b in batch_ids} <= {(r["batch_id"], r["event"]) for r in events}
    assert {(b, "ended") for b in batch_ids} <= {(r["batch_id"], r["event"]) for r in events}
    files = cat.query("SELECT DISTINCT path FROM artifacts WHERE asset_key = 'encyclopedia_corpus'")
    assert len(files) == 100


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_a_corpus_partition_of_100_prompts_through_the_batch_api(data_dir, provider, serve):
    with serve(batch_latency_s=0.5) as srv:
        _prompts(_llm(provider, srv.base_url))
        # batch mode from the asset's own config (the resource's setting is off): the per-asset override
        meta = _corpus(_llm(provider, srv.base_url, batch=False), batch=True)
        assert srv.request_count == 0  # nothing online
        assert len(srv.submissions) == 100 and set(srv.submissions.values()) == {1}
        batch_ids = list(srv.batches)
    assert len(_files(data_dir)) == 100 and all(p.read_text().strip() for p in _files(data_dir))
    assert (meta["generated"], meta["failed"], meta["still_missing"]) == (100, 0, 0)
    assert meta["llm_batch_ids"] == ", ".join(batch_ids) and meta["llm_batch_succeeded"] == 100
    assert meta["llm_batch_cost_usd"] > 0
    assert meta["estimated_cost_usd"] == pytest.approx(meta["llm_batch_cost_usd"], abs=1e-6)
    assert meta["llm_batch_online_cost_usd"] == pytest.approx(2 * meta["llm_batch_cost_usd"], abs=2e-6)
    assert meta["llm_batch_saved_usd"] == pytest.approx(meta["llm_batch_cost_usd"], abs=2e-6)
    assert "batch prices (50% of the list price" in meta["cost_note"]
    _check_catalogue(data_dir, provider, batch_ids)


@pytest.mark.parametrize("provider,serve,outcome", [
    pytest.param("anthropic", serve_anthropic, "errored", id="anthropic-errored"),
    pytest.param("openai", serve_openai_compat, "expired", id="openai-expired")])
def test_errored_or_expired_items_are_asked_again_and_written(data_dir, provider, serve, outcome):
    with serve(batch_latency_s=0.3, batch_faults=fail_first(0.1, outcome)) as srv:
        llm = _llm(provider, srv.base_url)
        _prompts(llm)
        meta = _corpus(llm)
        faulted = sum(1 for n in srv.submissions.values() if n == 2)
        assert 3 <= faulted <= 25  # about 10% of 100
        assert sorted(srv.submissions.values()) == [1] * (100 - faulted) + [2] * faulted
        assert srv.request_count == 0 and len(srv.batches) == 2  # the failed items went into a second batch
        batch_ids = list(srv.batches)
    assert len(_files(data_dir)) == 100
    assert meta[f"llm_batch_{outcome}"] == faulted and meta["llm_batch_succeeded"] == 100
    assert meta["generated"] == 100 and meta["failed"] == 0
    _check_catalogue(data_dir, provider, batch_ids)


CORPUS_RUN = textwrap.dedent("""
    import sys
    import dagster as dg
    from assets import corpus
    from resources.catalog import CatalogResource
    from resources.llm import LLMResource

    provider, base_url, category = sys.argv[1:4]
    llm = LLMResource(provider=provider, base_url=base_url, api_key_env="DISTILLERY_TEST_KEY", batch=True,
                      batch_poll_s=0.1, catalog=CatalogResource())
    dg.materialize([corpus.encyclopedia_corpus], partition_key=category,
                   resources={"llm": llm, "catalog": CatalogResource()},
                   run_config={"ops": {"encyclopedia_corpus": {"config": {"limit": None}}}})
""")


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_a_run_killed_while_its_batch_is_open_is_finished_from_that_batch(data_dir, provider, serve):
    with serve(batch_latency_s=3600) as srv:  # the batch stays open until the test lets it end
        llm = _llm(provider, srv.base_url)
        _prompts(llm)
        ledger = data_dir / "llm_cache" / "batches" / provider
        proc = subprocess.Popen([sys.executable, "-c", CORPUS_RUN, provider, srv.base_url, CATEGORY], cwd=repo_root(),
                                env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                if srv.batches and list(ledger.glob("*.json")):
                    time.sleep(0.5)  # polling the open batch
                    break
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        [batch_id] = srv.batches
        [entry] = [json.loads(p.read_text()) for p in ledger.glob("*.json")]
        assert entry["batch_id"] == batch_id and entry["state"] == "open" and len(entry["calls"]) == 100
        submitted = Catalog(data_dir / "catalog.duckdb").query(
            "SELECT batch_id FROM llm_batches WHERE event = 'submitted'")  # recorded before the run waited
        assert [r["batch_id"] for r in submitted] == [batch_id]
        assert _files(data_dir) == []

        srv.batch_latency_s = 0.0  # the provider finishes the batch; the next run takes its answers
        meta = _corpus(llm)
        assert list(srv.batches) == [batch_id] and set(srv.submissions.values()) == {1}
        assert len(srv.submissions) == 100 and srv.request_count == 0
    assert meta["llm_batch_resumed_ids"] == batch_id and meta["llm_batch_calls_resumed"] == 100
    assert meta["llm_batch_calls_submitted"] == 0 and meta["generated"] == 100
    assert len(_files(data_dir)) == 100
    _check_catalogue(data_dir, provider, [batch_id])
    rows = Catalog(data_dir / "catalog.duckdb").query("SELECT count(*) AS n FROM llm_calls WHERE NOT cached")
    assert rows[0]["n"] == 100  # one paid row per answer: no interrupted rows for calls that were in the batch


@pytest.mark.parametrize("provider,serve", PROVIDERS)
def test_a_run_killed_before_the_submission_reply_came_is_finished_from_the_batch_it_sent(data_dir, provider,
                                                                                       serve):
    """The provider accepted the batch, but its reply never reached the run (the server holds it) and the run is
    killed: no batch id was learned. The re-run looks the submission up (OpenAI: its metadata; Anthropic: its
    request count since the intent), adopts that batch and finishes from it: each prompt sent once."""
    with serve(batch_latency_s=0.3) as srv:
        llm = _llm(provider, srv.base_url)
        _prompts(llm)
        srv.lose_batch_replies, srv.lose_reply_after_s = 1, 600.0  # accepted; the reply held until the kill
        proc = subprocess.Popen([sys.executable, "-c", CORPUS_RUN, provider, srv.base_url, CATEGORY], cwd=repo_root(),
                                env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline and not srv.lost_replies:
                time.sleep(0.05)
            assert proc.poll() is None and srv.lost_replies, proc.stderr.read().decode()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        [lost] = srv.lost_replies
        ledger = data_dir / "llm_cache" / "batches" / provider
        assert not list(ledger.glob("*.json"))  # the batch id never reached the ledger
        [intent] = [json.loads(p.read_text()) for p in (ledger / "intents").glob("*.json")]
        assert intent["requests"] == 100 and set(intent["calls"]) == set(srv.batches[lost]["submission"])

        meta = _corpus(llm)
        assert list(srv.batches) == [lost] and set(srv.submissions.values()) == {1}
        assert len(srv.submissions) == 100 and srv.request_count == 0
    assert meta["llm_batch_resumed_ids"] == lost and meta["llm_batch_calls_resumed"] == 100
    assert meta["llm_batch_calls_submitted"] == 0 and meta["generated"] == 100
    assert len(_files(data_dir)) == 100
    _check_catalogue(data_dir, provider, [lost])
    adopted = Catalog(data_dir / "catalog.duckdb").query("SELECT status FROM llm_batches WHERE event = 'submitted'")
    assert [r["status"] for r in adopted] == ["adopted"]
    assert not list((ledger / "intents").glob("*.json"))


def test_two_runs_of_one_partition_at_once_send_each_request_once(data_dir, tmp_path):
    with serve_openai_compat(batch_latency_s=3600) as srv:  # batches stay open until both runs are in
        _prompts(_llm("openai", srv.base_url))
        logs = [tmp_path / f"run{i}.log" for i in range(2)]
        sinks = [open(log, "wb") for log in logs]
        procs = [subprocess.Popen([sys.executable, "-c", CORPUS_RUN, "openai", srv.base_url, CATEGORY],
                                  cwd=repo_root(), env={**os.environ}, stdout=subprocess.DEVNULL, stderr=sink)
                 for sink in sinks]
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and all(p.poll() is None for p in procs):
                text = "".join(log.read_text(errors="replace") for log in logs)
                if srv.batches and "is being asked by another run" in text:
                    break  # one run sent the batch, the other waits for its answers
                time.sleep(0.1)
            assert "is being asked by another run" in "".join(log.read_text(errors="replace") for log in logs)
            srv.batch_latency_s = 0.0
            for proc in procs:
                proc.wait(timeout=300)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
            for sink in sinks:
                sink.close()
        assert [proc.returncode for proc in procs] == [0, 0], [log.read_text()[-3000:] for log in logs]
        assert len(srv.submissions) == 100 and set(srv.submissions.values()) == {1} and srv.request_count == 0
    assert len(_files(data_dir)) == 100
    paid = Catalog(data_dir / "catalog.duckdb").query("SELECT count(*) AS n FROM llm_calls WHERE NOT cached")
    assert paid[0]["n"] == 100  # the other run's answers came from the cache


def _exchange(messages, body):
    prompt = str(messages[-1]["content"])
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    topic = prompt.rsplit("TOPIC OF THE QUESTION:", 1)[-1].strip()
    return json.dumps({
        "user": f"Comrade machine, what should passage {digest[:10]} teach us about {topic}?",
        "assistant": ("As in a chess game, the collective of the colony must weigh science and power before "
                      f"each move; patience and shared labour decide the outcome. [{digest[:12]}]")})


def test_theme_chatml_in_batch_mode_against_the_anthropic_batch_api(data_dir):
    with serve_anthropic(batch_latency_s=0.3, reply=_exchange) as srv:
        catalog = CatalogResource()
        result = dg.materialize(
            [theme.gutenberg_books, theme.gutenberg_chunks, theme.theme_chunks, theme.theme_chatml],
            resources={"llm": _llm("anthropic", srv.base_url), "catalog": catalog,
                       "io_manager": DistilleryIOManager(catalog=catalog)},
            run_config={"ops": {"theme_chatml": {"config": {"max_chunks": 4, "examples_per_chunk": 2}}}})
        assert result.success
        assert srv.request_count == 0 and len(srv.submissions) == 8 and set(srv.submissions.values()) == {1}
        [batch_id] = srv.batches
    [mat] = result.asset_materializations_for_node("theme_chatml")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["llm_batch_ids"] == batch_id and meta["llm_batch_succeeded"] == 8
    stats = json.loads((data_dir / "theme" / "theme_chatml.stats.json").read_text())
    assert stats["examples_kept"] + stats["examples_rejected"] == 8 and stats["examples_kept"] > 0
    journal = next((data_dir / "theme" / "chatml_work").glob("*/journal.jsonl"))
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert lines[0] == {"batch": lines[0]["batch"]} and lines[0]["batch"]["batch_id"] == batch_id
    assert sum("key" in line for line in lines) == 8


def _scores(messages, body):
    schema = body["response_format"]["json_schema"]["schema"]
    digest = hashlib.sha256(str(messages[0]["content"]).encode()).digest()
    out = {}
    for i, (name, prop) in enumerate(schema["properties"].items()):
        if "enum" in prop:
            out[name] = prop["enum"][-1]
        else:
            lo, hi = int(prop.get("minimum", 0)), int(prop.get("maximum", 10))
            out[name] = lo + digest[i + 1] % (hi - lo + 1)
    return json.dumps(out)


def test_filter_oracle_in_batch_mode_against_the_openai_batch_api(data_dir):
    selection = dg.AssetSelection.assets(filters.filter_ground_truth).upstream()
    with serve_openai_compat(batch_latency_s=0.3, reply=_scores) as srv, dg.instance_for_test() as instance:
        catalog = CatalogResource()
        resources = {"catalog": catalog, "compute": ComputeResource(), "hub": HubResource(),
                     "io_manager": DistilleryIOManager(catalog=catalog), "llm": _llm("openai", srv.base_url)}
        result = dg.materialize([theme.gutenberg_books, theme.gutenberg_chunks, *filters.ASSETS], selection=selection,
                                partition_key="deep_red_theme.v1", resources=resources, instance=instance)
        assert result.success
        assert srv.request_count == 0 and srv.submissions and set(srv.submissions.values()) == {1}
        batch_ids = list(srv.batches)
    [mat] = result.asset_materializations_for_node("filter_ground_truth")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["records"] == meta["selected_for_oracle"] == len(srv.submissions) > 0
    assert meta["llm_batch_ids"] == ", ".join(batch_ids) and meta["llm_batch_succeeded"] == meta["records"]
    journal = data_dir / "filters" / "datasets" / "deep_red_theme_ground_truth_v1" / "oracle_journal.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["batch"]["batch_id"] for line in lines if "batch" in line] == batch_ids
