"""Provider ``fal``: fal.ai's ``openrouter/router`` app through ``fal-client``'s queue API.

One attempt = submit ``{model, system_prompt, prompt, temperature, max_tokens}`` to the queue, poll the
request's status until it completes (or ``timeout_s`` passes: then it is cancelled and retried), then fetch
the result ``{"output": str, "usage": {...}, "error": ...}``. The attempt keeps to ``timeout_s``: the submit
POST waits at most that long, every status poll at most what is left of it (fal-client's own polls wait up to
120 s each), and the queue is told the same limit (``start_timeout``, when over fal's 1 s minimum), so a
request still queued when the caller gives up is dropped by fal rather than run and billed.

* Key: the environment variable named by ``api_key_env`` (default FAL_KEY), else a ``FAL_KEY=...`` line
  in ``~/.env`` (the seed scripts' convention); the key is handed to ``fal_client.SyncClient(key=...)``.
* Host: fal-client reads ``FAL_RUN_HOST`` / ``FAL_QUEUE_RUN_HOST`` once, when it is imported, and always
  builds ``https://`` URLs, so a test server must speak TLS and those variables must be set before the
  first import (the tests start a subprocess for that).
* fal-client's own retries are switched off (its ``fal_client.client.MAX_ATTEMPTS``, read on every request,
  set to 1 when the SDK client is made; fal-client 1.0.3 retries timeouts, connection errors and 408/409/429
  up to 10 times with waits up to 30 s, the submit POST included, so one 120 s attempt could take about 20
  minutes). 429/5xx come back to the client's retry policy (Retry-After honoured). A submit that was sent but
  got no answer (read timeout, dropped connection) is NOT sent again: fal may have queued it, and a second
  submit would run and bill the same request twice; it fails (ProviderError) and the next run asks again. A
  submit that never reached fal (connect error) is retried as usual.
* The router has no JSON mode: JSON requests carry the schema in the system prompt and are validated
  (and re-asked) by the client. The router reports no finish reason; ``output_tokens >= max_tokens`` is
  reported as ``length``, ``partial: true`` as the failure ``partial``, and a ``finish_reason`` it does send
  (``content_filter``...) is used as it is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from distillery_assets.llm.jsonout import with_schema_instruction
from distillery_assets.llm.errors import ConfigError, ProviderError, RetryableError, parse_retry_after, retryable_status
from distillery_assets.llm.providers.base import ProviderReply, RemoteProvider, finish_reason
from distillery_assets.llm.types import ChatMessage

APP = "openrouter/router"
DEFAULT_MODEL = "qwen/qwen-2.5-72b-instruct"


def read_key(env_name: str, dotenv: Path | None = None) -> str | None:
    """The key from the environment, else from a ``NAME=value`` line of ``~/.env`` (blank/# lines skipped)."""
    value = os.environ.get(env_name)
    if value:
        return value.strip()
    dotenv = dotenv or Path.home() / ".env"
    try:
        lines = dotenv.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if name.strip().removeprefix("export ").strip() == env_name:
            return value.strip().strip("'\"") or None
    return None


def render_prompt(messages: list[ChatMessage], json_schema: dict[str, Any] | None) -> tuple[str, str]:
    """(system_prompt, prompt) for the router's single-turn body; later turns are rendered as a transcript."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    if json_schema is not None:
        system = with_schema_instruction(system, json_schema)
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 1:
        return system, turns[0].content
    labels = {"user": "User", "assistant": "Assistant"}
    return system, "\n\n".join(f"{labels[m.role]}: {m.content}" for m in turns) + "\n\nAssistant:"


def _check(response: Any) -> None:
    """A queue poll's HTTP error as the client's two kinds (429/5xx retryable, with Retry-After)."""
    if response.status_code < 400:
        return
    message = f"HTTP {response.status_code}: {response.text[:300]}"
    if retryable_status(response.status_code):
        raise RetryableError(message, parse_retry_after(response.headers))
    raise ProviderError(message)


class FalProvider(RemoteProvider):
    name = "fal"
    default_key_env = "FAL_KEY"
    default_model_id = DEFAULT_MODEL

    def __init__(self, *, api_key_env: str | None = None, default_model: str | None = None,
                 timeout_s: float = 120.0, poll_interval_s: float = 0.5):
        super().__init__(api_key_env=api_key_env, default_model=default_model, timeout_s=timeout_s)
        self.poll_interval_s = poll_interval_s

    def _api_key(self) -> str | None:
        return read_key(self.api_key_env)

    def _make_sdk(self):
        import fal_client

        key = self._api_key()
        if not key:
            raise ConfigError(f"provider fal: set {self.api_key_env} in the environment or in ~/.env")
        import fal_client.client as fal_impl

        if not isinstance(getattr(fal_impl, "MAX_ATTEMPTS", None), int):  # a fal-client that moved it: say so
            raise ConfigError("provider fal: this fal-client has no fal_client.client.MAX_ATTEMPTS, so its own "
                              "retries cannot be switched off (a retried submit could be billed twice)")
        fal_impl.MAX_ATTEMPTS = 1  # one HTTP attempt per SDK request; the client's retry policy owns retries
        return fal_client.SyncClient(key=key, default_timeout=self.timeout_s)

    def _wait_for_result(self, handle: Any, deadline: float, timeout_s: float) -> Any:
        """Poll the queued request until it completes, each request limited to what is left of the deadline
        (cancelled and a RetryableError when it passes), then fetch the result."""
        http = handle.client  # the SDK's authenticated httpx client, with its backup-domain transport
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RetryableError(f"timeout after {timeout_s:g}s waiting in fal's queue")
                response = http.get(handle.status_url, params={"logs": "0"}, timeout=left)
                _check(response)
                data = response.json()
                if data.get("status") == "COMPLETED":
                    if data.get("error"):
                        raise ProviderError(f"fal request failed: {data['error']}")
                    break
                time.sleep(max(0.0, min(self.poll_interval_s, deadline - time.monotonic())))
        except Exception:  # given up on (a retry submits anew): cancel it so it is not run and billed as well
            self._cancel(handle)
            raise
        # done and paid for: the result gets at least a few seconds even at the deadline
        response = http.get(handle.response_url, timeout=max(deadline - time.monotonic(), 5.0))
        _check(response)
        return response.json()

    @staticmethod
    def _cancel(handle: Any) -> None:
        try:
            handle.client.put(handle.cancel_url, timeout=5.0)
        except Exception:  # best effort: the queue's start_timeout drops it anyway
            pass

    def call(self, messages: list[ChatMessage], *, model: str, temperature: float, max_tokens: int,
             json_schema: dict[str, Any] | None, stop: list[str] | None, seed: int | None,
             timeout_s: float) -> ProviderReply:
        import fal_client
        import httpx

        system, prompt = render_prompt(messages, json_schema)
        body: dict[str, Any] = {"model": model, "prompt": prompt, "temperature": temperature,
                                "max_tokens": max_tokens}
        if system:
            body["system_prompt"] = system
        client = self._sdk()
        deadline = time.monotonic() + timeout_s
        try:
            try:
                handle = client.submit(APP, arguments=body, start_timeout=timeout_s if timeout_s > 1 else None)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError):
                raise  # never reached fal: retried by the client's policy
            except httpx.TransportError as exc:  # sent, no answer: fal may have queued (and will bill) it
                raise ProviderError(f"fal's queue gave no answer to the submit ({type(exc).__name__}, limit "
                                    f"{timeout_s:g}s); it may have been queued and billed, so it is not sent "
                                    "again by this run") from exc
            result = self._wait_for_result(handle, deadline, timeout_s)
        except fal_client.FalClientHTTPError as exc:
            message = f"HTTP {exc.status_code}: {str(exc)[:300]}"
            if retryable_status(exc.status_code):
                raise RetryableError(message, parse_retry_after(exc.response.headers)) from exc
            raise ProviderError(message) from exc
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timeout after {timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"connection error: {exc}") from exc
        except ValueError as exc:  # a body that is not JSON
            raise RetryableError(f"malformed response: {exc}") from exc
        if not isinstance(result, dict) or not isinstance(result.get("output"), str):
            raise RetryableError(f"malformed response: {str(result)[:200]!r}")
        if result.get("error"):
            raise ProviderError(f"fal router error: {result['error']}")
        usage = result.get("usage") or {}
        out_tokens = int(usage.get("completion_tokens") or 0)
        if result.get("partial"):  # the router says the output is incomplete, whatever else it reports
            finish = "partial"
        else:
            finish = finish_reason(result.get("finish_reason") or ("length" if out_tokens >= max_tokens else "stop"))
        cost = usage.get("cost")
        return ProviderReply(
            text=result["output"],
            finish_reason=finish,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=out_tokens,
            cost_usd=float(cost) if cost is not None else None,
        )
