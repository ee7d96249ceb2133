"""Only a natural stop is finished: every other finish reason of every provider, through its official SDK against
the loopback fake of its API (llama.cpp through a stand-in model), is a named failure when driven through the
task runner: no file written, the reason in the failure and in the usage counts, nothing cached (asked again)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest, LLMSettings
from distillery_assets.llm.cache import ResponseCache
from distillery_assets.llm.providers.base import ProviderReply, finish_reason
from distillery_assets.llm.providers.scripted import ScriptedProvider
from distillery_assets.llm.settings import build_provider
from distillery_assets.llm.task import LLMTask, run_task
from tests.support.fakeapi import serve_anthropic, serve_fal_queue, serve_openai_compat


class WriteFiles(LLMTask[str]):
    """One file per row, written the moment its answer is a record (as the corpus writes .corpus files)."""

    name = "finish_test"
    ordered = False

    def __init__(self, folder: Path):
        self.folder = folder

    def prompt(self, row: str) -> LLMRequest:
        return LLMRequest(messages=[ChatMessage(role="system", content="Be brief."),
                                    ChatMessage(role="user", content=f"Write about {row}.")], max_tokens=64)


def run_once(client, folder: Path, rows=("tides",)):
    task = WriteFiles(folder)
    return run_task(task, list(rows), client,
                    on_record=lambda row, text, result: (folder / f"{row}.txt").write_text(text))


def client_for(provider_name: str, base_url: str, tmp_path: Path, monkeypatch) -> LLMClient:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    provider = build_provider(LLMSettings(provider=provider_name, base_url=base_url, timeout_s=5.0))
    return LLMClient(provider, cache_dir=tmp_path / "cache", timeout_s=5.0, backoff_initial_s=0.01,
                     sleep=lambda s: None)


def assert_named_failure(run, folder: Path, cache: Path, reason: str) -> None:
    assert run.records == [] and not list(folder.glob("*.txt"))  # nothing written
    assert len(run.failures) == 1 and f"finish_reason={reason}" in run.failures[0].reason, run.failures
    result = run.results["tides"]
    assert not result.ok and result.error_kind == reason and result.finish_reason == reason
    usage = run.usage.as_dict()
    assert usage["failed"] == 1 and usage[f"failed_{reason}"] == 1, usage
    assert not list(cache.rglob("*.json"))  # never cached as a success


# (what the fake sends, the named failure); "length": the ("length",) fault, cut at max_tokens twice
OPENAI_FINISHES = [("content_filter", "content_filter"), ("tool_calls", "tool_call"), ("refusal", "refusal"),
                   (None, "no_finish_reason"), ("function_call", "tool_call"), ("length", "length")]
ANTHROPIC_FINISHES = [("refusal", "refusal"), ("pause_turn", "pause_turn"), ("tool_use", "tool_call"),
                      ("model_context_window_exceeded", "model_context_window_exceeded"),
                      (None, "no_finish_reason"), ("length", "length")]


def faults(sent):
    # a reply cut at max_tokens is asked again once with twice the budget: cut both times
    return [("length",), ("length",)] if sent == "length" else [("finish", sent)]


@pytest.mark.parametrize("sent,reason", OPENAI_FINISHES)
def test_openai_every_finish_but_stop_is_a_named_failure(tmp_path, monkeypatch, sent, reason):
    folder = tmp_path / "out"
    folder.mkdir()
    with serve_openai_compat(script=faults(sent)) as srv:
        client = client_for("openai", srv.base_url, tmp_path, monkeypatch)
        run = run_once(client, folder)
        assert srv.request_count == (2 if sent == "length" else 1)  # not asked again, but for length's re-ask
        assert_named_failure(run, folder, tmp_path / "cache", reason)
        again = run_once(client, folder)  # not cached: the next run asks again, and gets a whole answer
        assert srv.request_count == (3 if sent == "length" else 2)
    assert again.records and (folder / "tides.txt").exists() and not again.results["tides"].cached


@pytest.mark.parametrize("sent,reason", ANTHROPIC_FINISHES)
def test_anthropic_every_finish_but_end_turn_is_a_named_failure(tmp_path, monkeypatch, sent, reason):
    folder = tmp_path / "out"
    folder.mkdir()
    with serve_anthropic(script=faults(sent)) as srv:
        client = client_for("anthropic", srv.base_url, tmp_path, monkeypatch)
        run = run_once(client, folder)
        assert srv.request_count == (2 if sent == "length" else 1)
        assert_named_failure(run, folder, tmp_path / "cache", reason)
        again = run_once(client, folder)
        assert srv.request_count == (3 if sent == "length" else 2)
    assert again.records and (folder / "tides.txt").exists()


def test_anthropic_stop_sequence_is_a_natural_stop():
    assert finish_reason("stop_sequence") == finish_reason("end_turn") == "stop"
    assert finish_reason("max_tokens") == "length" and finish_reason("tool_use") == "tool_call"
    assert finish_reason("stop", tool_call=True) == "tool_call" and finish_reason("") == "no_finish_reason"
    assert finish_reason(finish_reason("tool_calls")) == "tool_call"  # idempotent


# fal-client reads its hosts when it is imported: the run happens in a subprocess pointed at the fake
FAL_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from distillery_assets.llm import LLMClient, LLMSettings
    from distillery_assets.llm.settings import build_provider
    from distillery_assets.llm.task import run_task
    from tests.unit.test_llm_finish import WriteFiles
    folder, cache = Path(sys.argv[1]), Path(sys.argv[2])
    provider = build_provider(LLMSettings(provider="fal", timeout_s=5))
    provider.poll_interval_s = 0.02
    client = LLMClient(provider, cache_dir=cache, timeout_s=5, backoff_initial_s=0.01)
    out = []
    for row in sys.argv[3:]:
        run = run_task(WriteFiles(folder), [row], client,
                       on_record=lambda row, text, result: (folder / f"{row}.txt").write_text(text))
        out.append({"failures": [f.reason for f in run.failures], "usage": run.usage.as_dict(),
                    "error_kind": run.results[row].error_kind})
    print(json.dumps(out))
""")


def test_fal_partial_content_filter_and_length_are_named_failures(tmp_path):
    folder, cache = tmp_path / "out", tmp_path / "cache"
    folder.mkdir()
    script = [("finish", "content_filter"), ("finish", "partial"), ("length",), ("length",), ("finish", None)]
    with serve_fal_queue(latency_s=0.02, script=script) as srv:
        env = {**os.environ, **srv.client_env(), "FAL_KEY": "fal-test:secret", "DISTILLERY_DATA_DIR": str(tmp_path)}
        proc = subprocess.run([sys.executable, "-c", FAL_SCRIPT, str(folder), str(cache), "a", "b", "c", "d"],
                              env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert srv.request_count == 5
    a, b, c, d = json.loads(proc.stdout.strip().splitlines()[-1])
    for got, reason in ((a, "content_filter"), (b, "partial"), (c, "length")):
        assert got["error_kind"] == reason and got["usage"][f"failed_{reason}"] == 1
        assert f"finish_reason={reason}" in got["failures"][0]
    # the router sends no finish reason at all: a whole answer under the budget is a natural stop
    assert d["failures"] == [] and d["usage"]["failed"] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["d.txt"]
    assert len(list(cache.rglob("*.json"))) == 1


class StandInLlama:
    """llama-cpp-python's ``create_chat_completion`` answers, scripted (no model file is read)."""

    def __init__(self, replies):
        self.replies = list(replies)

    def create_chat_completion(self, **kwargs):
        finish, extra = self.replies.pop(0)
        message = {"role": "assistant", "content": "half a sent", **extra}
        return {"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3}}


@pytest.mark.parametrize("finish,extra,reason", [
    ("length", {}, "length"), (None, {}, "no_finish_reason"),
    ("tool_calls", {"content": None, "tool_calls": [{"id": "c", "type": "function",
                                                     "function": {"name": "f", "arguments": "{}"}}]}, "tool_call"),
])
def test_local_every_finish_but_stop_is_a_named_failure(tmp_path, monkeypatch, finish, extra, reason):
    from distillery_assets.llm.providers import local

    gguf = tmp_path / "stand-in.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 28)
    replies = [(finish, extra)] * (2 if finish == "length" else 1) + [("stop", {})]  # length: asked twice
    monkeypatch.setattr(local, "_load_model", lambda *a: StandInLlama(replies))
    folder = tmp_path / "out"
    folder.mkdir()
    client = LLMClient(local.LocalProvider(gguf, n_threads=1), cache_dir=tmp_path / "cache")
    run = run_once(client, folder)
    assert_named_failure(run, folder, tmp_path / "cache", reason)
    assert run_once(client, folder).records and (folder / "tides.txt").exists()


def test_accept_truncated_accepts_length_only(tmp_path):
    cut = ProviderReply(text="a story that stops mid", finish_reason="length", input_tokens=4, output_tokens=5)
    filtered = ProviderReply(text="a story that st", finish_reason="content_filter", input_tokens=4, output_tokens=4)
    client = LLMClient(ScriptedProvider([cut, filtered]), cache_dir=tmp_path / "cache", length_retries=0)
    ask = lambda text: LLMRequest(messages=[ChatMessage(role="user", content=text)], accept_truncated=True)
    assert client.complete(ask("one")).ok
    result = client.complete(ask("two"))
    assert not result.ok and result.error_kind == "content_filter"


def test_an_answer_an_older_version_cached_after_a_content_filter_is_asked_again(tmp_path):
    request = LLMRequest(messages=[ChatMessage(role="user", content="story")])
    provider = ScriptedProvider(["the whole story"])
    key = request.key(provider.name, provider.model_id(None))
    ResponseCache(tmp_path / "cache").put(key, {"text": "the sto", "finish_reason": "content_filter"})
    result = LLMClient(provider, cache_dir=tmp_path / "cache").complete(request)
    assert result.ok and not result.cached and result.text == "the whole story" and len(provider.calls) == 1
