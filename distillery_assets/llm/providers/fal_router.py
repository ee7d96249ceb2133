"""Provider ``fal``: fal.ai's ``openrouter/router`` app through ``fal-client``'s queue API.

One attempt = submit ``{model, system_prompt, prompt, temperature, max_tokens}`` to the queue, poll the
request's status until it completes (or ``timeout_s`` passes: then it is cancelled and retried), then fetch
the result ``{"output": str, "usage": {...}, "error": ...}``.

* Key: the environment variable named by ``api_key_env`` (default FAL_KEY), else a ``FAL_KEY=...`` line
  in ``~/.env`` (the seed scripts' convention); the key is handed to ``fal_client.SyncClient(key=...)``.
* Host: fal-client reads ``FAL_RUN_HOST`` / ``FAL_QUEUE_RUN_HOST`` once, when it is imported, and always
  builds ``https://`` URLs, so a test server must speak TLS and those variables must be set before the
  first import (the tests start a subprocess for that).
* fal-client retries 408/409/429 itself (up to 10 times, short exponential delays, no Retry-After);
  5xx, timeouts and connection errors come back to the client's retry policy.
* The router has no JSON mode: JSON requests carry the schema in the system prompt and are validated
  (and re-asked) by the client. The router reports no finish reason; ``output_tokens >= max_tokens`` is
  reported as ``length``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from distillery_assets.llm.jsonout import with_schema_instruction
from distillery_assets.llm.errors import ConfigError, ProviderError, RetryableError, parse_retry_after, retryable_status
from distillery_assets.llm.providers.base import ProviderReply, RemoteProvider
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
        return fal_client.SyncClient(key=key, default_timeout=self.timeout_s)

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
            handle = client.submit(APP, arguments=body)
            while True:
                status = handle.status()
                if isinstance(status, fal_client.Completed):
                    if status.error:
                        raise ProviderError(f"fal request failed: {status.error}")
                    break
                if time.monotonic() > deadline:
                    try:
                        handle.cancel()
                    finally:
                        raise RetryableError(f"timeout after {timeout_s:g}s waiting in fal's queue")
                time.sleep(self.poll_interval_s)
            result = handle.get()
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
        finish = result.get("finish_reason") or ("length" if out_tokens >= max_tokens else "stop")
        cost = usage.get("cost")
        return ProviderReply(
            text=result["output"],
            finish_reason=finish,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=out_tokens,
            cost_usd=float(cost) if cost is not None else None,
        )
