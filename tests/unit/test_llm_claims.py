"""One payer per request across processes: a request key claimed by a live run makes another wait for its
answer (read from the cache) or skip the item and say so; a dead process's claim expires with it."""

import subprocess
import sys
import textwrap
import threading
import time

from distillery_assets.llm import ChatMessage, LLMClient, LLMRequest
from distillery_assets.llm.cache import ResponseCache
from distillery_assets.llm.providers.scripted import ScriptedProvider


def ask(text="hello"):
    return LLMRequest(messages=[ChatMessage(role="user", content=text)])


def setup(tmp_path, **kw):
    provider = ScriptedProvider()
    client = LLMClient(provider, cache_dir=tmp_path / "cache", **kw)
    key = ask().key(provider.name, provider.model_id(None))
    return provider, client, ResponseCache(tmp_path / "cache"), key


def test_a_request_claimed_by_a_live_run_is_skipped_and_says_so(tmp_path):
    provider, client, cache, key = setup(tmp_path, claim_wait_s=0.3, claim_poll_s=0.05)
    held = cache.claim(key)  # another run (a separate lock, as another process's would be) is asking it
    assert held is not None and cache.claim(key) is None
    try:
        result = client.complete(ask())
    finally:
        held.release()
    assert not result.ok and result.error_kind == "claimed" and "another run is asking this request" in result.error
    assert provider.calls == []  # not paid twice
    assert client.complete(ask()).ok and len(provider.calls) == 1  # released: asked now


def test_a_waiting_request_reads_the_other_runs_answer_from_the_cache(tmp_path):
    provider, client, cache, key = setup(tmp_path, claim_wait_s=30, claim_poll_s=0.05)
    held = cache.claim(key)

    def other_run_answers():
        time.sleep(0.3)
        cache.put(key, {"text": "their answer", "finish_reason": "stop", "input_tokens": 3, "output_tokens": 2})
        held.release()

    threading.Thread(target=other_run_answers).start()
    result = client.complete(ask())
    assert result.ok and result.cached and result.text == "their answer" and provider.calls == []
    assert not list((tmp_path / "cache" / "claims").rglob("*.claim"))  # the claim file went with its claim


HOLDER = textwrap.dedent("""
    import sys, time
    from distillery_assets.llm.cache import ResponseCache
    claim = ResponseCache(sys.argv[1]).claim(sys.argv[2])
    print("held" if claim else "busy", flush=True)
    time.sleep(120)
""")


def test_the_claim_of_a_killed_process_expires(tmp_path):
    provider, client, cache, key = setup(tmp_path, claim_wait_s=20, claim_poll_s=0.05)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "cache"), key], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cache.claim(key) is None  # alive: held
        holder.kill()  # kill -9: no clean-up runs; the kernel drops its lock
        holder.wait(timeout=10)
        started = time.monotonic()
        result = client.complete(ask())
    finally:
        if holder.poll() is None:
            holder.kill()
    assert result.ok and not result.cached and len(provider.calls) == 1
    assert time.monotonic() - started < 5  # no waiting for a dead run
    assert client.complete(ask()).cached


def test_claims_leave_no_files_and_failures_release_theirs(tmp_path):
    from distillery_assets.llm.errors import ProviderError

    provider = ScriptedProvider([ProviderError("HTTP 400: no")])
    client = LLMClient(provider, cache_dir=tmp_path / "cache")
    assert not client.complete(ask("a")).ok
    assert client.complete(ask("a")).ok and client.complete(ask("b")).ok  # the failed one's claim was released
    assert not list((tmp_path / "cache").rglob("*.claim"))


def test_a_filesystem_that_refuses_flock_turns_claims_off_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno

    from distillery_assets.llm import cache as cache_module

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cache_module.fcntl, "flock", refuse)
    provider, client, cache, key = setup(tmp_path)
    with caplog.at_level("WARNING"):
        assert client.complete(ask()).ok and client.complete(ask("b")).ok
    assert len(provider.calls) == 2 and caplog.text.count("refuses flock") == 1
