"""Every file written has its catalogue row and every call the server received its usage row, whatever stops
a run: a kill -9 in the middle of generation, or a catalogue another process holds past the bounded wait.

The real ``dagster asset materialize`` CLI (one process: the in-process executor) generates a corpus partition
against the loopback OpenAI-compatible server (with latency, so requests are in flight at any moment); the
test kills it, or holds the catalogue's lock from another process, then runs it again and counts: ``.corpus``
files on disk against catalogue rows, requests the server answered against the ``attempts`` in ``llm_calls``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets import corpus
from distillery_assets.catalog import Catalog
from distillery_assets.paths import repo_root
from resources.catalog import CatalogResource
from tests.support.fakeapi.openai_compat import serve_openai_compat

pytestmark = pytest.mark.e2e
CONCURRENCY = 2
PARTITION = "mathematics"  # 20 subjects x 5 angles = 100 files


def _env(data_dir: Path, home: Path, srv, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_LLM_")}
    env.update(DISTILLERY_DATA_DIR=str(data_dir), DAGSTER_HOME=str(home), DAGSTER_TELEMETRY_DISABLED="1",
               DISTILLERY_LLM_PROVIDER="openai", DISTILLERY_LLM_BASE_URL=srv.base_url,
               DISTILLERY_LLM_CONCURRENCY=str(CONCURRENCY), DISTILLERY_LLM_API_KEY_ENV="DISTILLERY_TEST_UNSET_KEY",
               **extra)
    env.pop("DISTILLERY_CORPUS_ROOT", None)
    return env


def _command(config: dict) -> list[str]:
    run_config = {"execution": {"config": {"in_process": {}}}, "ops": {"encyclopedia_corpus": {"config": config}}}
    return [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "distillery_assets.definitions",
            "--select", "encyclopedia_corpus", "--partition", PARTITION, "--config-json", json.dumps(run_config)]


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "dagster_home"
    path.mkdir()
    return path


def _prompts(data_dir: Path) -> Path:
    assert dg.materialize([corpus.encyclopedia_prompts], partition_key=PARTITION,
                          resources={"catalog": CatalogResource()}).success
    return data_dir / "corpus" / "encyclopedia" / PARTITION


def _files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*.corpus")}


def _wait_for(proc, what, predicate, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"never {what}:\n{log.read_text()[-4000:]}"
        time.sleep(0.02)


def _catalogued(data_dir: Path) -> set[str]:
    cat = Catalog(data_dir / "catalog.duckdb")
    rows = cat.query("select path, count(*) n, count(metadata->>'found') found from artifacts "
                     "where asset_key = 'encyclopedia_corpus' group by 1")
    assert all(r["n"] == 1 for r in rows), rows  # no file recorded twice
    assert all(r["found"] == 0 for r in rows), rows  # each by the run that wrote it, not found later on disk
    return {str(cat.absolute(r["path"])) for r in rows}


def _attempts(data_dir: Path) -> int:
    return Catalog(data_dir / "catalog.duckdb").query(
        "select coalesce(sum(attempts), 0) n from llm_calls where not cached")[0]["n"]


def _finish(env: dict, data_dir: Path) -> subprocess.CompletedProcess:
    """The next run (one more file): it records what the stopped run left, before planning."""
    proc = subprocess.run(_command({"limit": 1}), env=env, cwd=repo_root(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_kill_mid_generation_leaves_every_file_and_every_paid_call_catalogued(data_dir, home, tmp_path):
    folder = _prompts(data_dir)
    with serve_openai_compat(latency_s=0.4) as srv:
        env = _env(data_dir, home, srv)
        log = tmp_path / "killed.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(_command({"limit": None}), env=env, cwd=repo_root(), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                _wait_for(proc, "it wrote 6 files", lambda: len(_files(folder)) >= 6, log)

                def settled() -> bool:  # every slot's request received at the server, none about to be sent
                    seen = srv.request_count
                    time.sleep(0.1)
                    return srv._in_flight == CONCURRENCY and srv.request_count == seen
                _wait_for(proc, "its requests settled", settled, log)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        on_disk, paid = _files(folder), srv.request_count
        assert 6 <= len(on_disk) < 100 and paid >= len(on_disk) + CONCURRENCY  # killed with calls in flight

        _finish(env, data_dir)
        assert len(_files(folder)) == len(on_disk) + 1
        assert _catalogued(data_dir) == _files(folder)  # every file on disk has its row, once
        assert _attempts(data_dir) == srv.request_count  # every request the server received has its usage row
        interrupted = Catalog(data_dir / "catalog.duckdb").query(
            "select count(*) n from llm_calls where starts_with(error, 'interrupted')")[0]["n"]
        assert interrupted == paid - len(on_disk)  # in flight at the kill (the re-run asked them again)
        assert not list((data_dir / "catalog.spool").glob("*.jsonl"))


def test_a_catalogue_held_past_the_wait_fails_the_run_and_the_next_run_records_its_files(data_dir, home, tmp_path):
    folder = _prompts(data_dir)
    with serve_openai_compat(latency_s=0.4) as srv:
        env = _env(data_dir, home, srv, DISTILLERY_CATALOG_LOCK_TIMEOUT_S="3")
        log = tmp_path / "blocked.log"
        holder = None
        with open(log, "w") as out:
            proc = subprocess.Popen(_command({"limit": 30}), env=env, cwd=repo_root(), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                _wait_for(proc, "it wrote 2 files", lambda: len(_files(folder)) >= 2, log)
                holder = subprocess.Popen(  # another process takes the catalogue and keeps it past the run
                    [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                     "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(300)",
                     str(data_dir / "catalog.duckdb.lock")],
                    stdout=subprocess.PIPE, text=True)
                assert holder.stdout.readline().strip() == "held"
                assert proc.poll() is None, "the run ended before the catalogue was taken"
                assert proc.wait(timeout=240) != 0
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                if holder is not None:
                    holder.kill()
                    holder.wait(timeout=30)
        output = log.read_text()
        assert "is busy: another process holds its lock file" in output and "Nothing is lost" in output, output[-4000:]
        written = _files(folder)
        assert len(written) == 30

        _finish(env, data_dir)
        assert _catalogued(data_dir) == _files(folder) and len(written) + 1 == len(_files(folder))
        assert _attempts(data_dir) == srv.request_count


def test_files_on_disk_without_a_row_are_recorded_by_the_next_run(data_dir):
    """Files an older version left without rows (or copied in by hand) are skipped as done, and catalogued."""
    folder = _prompts(data_dir)
    leaf = folder / "algebra"
    for name in ("algebra_history.corpus", "algebra_introduction.corpus"):
        (leaf / name).write_text(f"{name} from before\n")
    with serve_openai_compat(latency_s=0.01) as srv:
        from resources.llm import LLMResource

        llm = LLMResource(provider="openai", base_url=srv.base_url, api_key_env="DISTILLERY_TEST_UNSET_KEY",
                          catalog=CatalogResource())
        result = dg.materialize([corpus.encyclopedia_corpus], partition_key=PARTITION,
                                resources={"llm": llm, "catalog": CatalogResource()},
                                run_config={"ops": {"encyclopedia_corpus": {"config": {"limit": 1}}}})
    assert result.success and srv.request_count == 1
    rows = Catalog(data_dir / "catalog.duckdb").query(
        "select path, partition, metadata->>'found' found from artifacts where asset_key = 'encyclopedia_corpus'")
    found = {Path(r["path"]).name: (r["partition"], r["found"] is not None) for r in rows}
    [generated] = [name for name, (_, was_found) in found.items() if not was_found]  # the one asked for now
    assert found == {"algebra_history.corpus": (PARTITION, True), "algebra_introduction.corpus": (PARTITION, True),
                     generated: (PARTITION, False)}
