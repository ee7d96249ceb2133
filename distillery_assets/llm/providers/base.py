"""The contract every provider module fulfils; the client never sees an SDK type.

:class:`RemoteProvider` is what the three remote providers (openai, anthropic, fal) share: the default model,
the NAME of the variable holding the API key (read when the SDK client is made, never stored in settings),
the base URL, the timeout, and an SDK client made on first use under a lock; each subclass keeps its own
SDK set-up (``_make_sdk``) and its own mapping of messages, options and replies.

Two things every provider reports the same way:

* :func:`finish_reason`: why the model stopped, in one vocabulary: ``stop`` (it stopped by itself: OpenAI's
  ``stop``, Anthropic's ``end_turn``/``stop_sequence``), ``length`` (cut off at ``max_tokens``: ``max_tokens``
  for Anthropic), ``tool_call`` (a tool call nobody offered: ``tool_calls``, ``function_call``, ``tool_use``),
  ``refusal``, ``no_finish_reason`` (none given) or the provider's own word for anything else
  (``content_filter``, ``pause_turn``, ``model_context_window_exceeded``...). Only ``stop`` is a finished
  answer; the client makes every other one a named failure.
* ``endpoint``: the server a remote provider talks to, when it is not the provider's default (``None`` for
  the default, so the cache keys of answers from the default server never change): the cache key names it,
  so two servers serving different weights under one model name never share answers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

from distillery_assets.llm.errors import ProviderError, RetryableError, parse_retry_after, retryable_status
from distillery_assets.llm.types import ChatMessage


STOP = "stop"  # the model stopped by itself: the only finish that makes a reply a result
LENGTH = "length"  # cut off at max_tokens: asked again with a larger budget, or accepted by accept_truncated
_FINISH = {
    "stop": STOP, "end_turn": STOP, "stop_sequence": STOP, "eos": STOP, "eos_token": STOP,
    "length": LENGTH, "max_tokens": LENGTH,
    "tool_calls": "tool_call", "function_call": "tool_call", "tool_use": "tool_call",
}


def finish_reason(raw: str | None, *, tool_call: bool = False, refusal: bool = False) -> str:
    """``raw`` (the provider's finish/stop reason) in the one vocabulary of the module docstring. ``tool_call``
    / ``refusal``: the reply carries a tool call or a refusal whatever its finish reason says (OpenAI reports a
    structured-output refusal with ``finish_reason="stop"``). Idempotent: a normalised reason maps to itself."""
    if tool_call:
        return "tool_call"
    if refusal:
        return "refusal"
    if raw is None or not str(raw).strip():
        return "no_finish_reason"
    raw = str(raw).strip()
    return _FINISH.get(raw, raw)


def endpoint_id(url: str | None, default: str | None) -> str | None:
    """``url`` as it names a server in a cache key (scheme and host in lower case, no credentials, query or
    trailing slash), or None when it is ``default`` (or not given)."""
    def norm(value: str) -> str:
        parts = urlsplit(value.strip())
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme.lower(), host.lower(), parts.path.rstrip("/"), "", ""))

    if not url:
        return None
    mine = norm(url)
    return None if default is not None and mine == norm(default) else mine


def endpoint_of(provider: Any) -> str | None:
    """The provider's ``endpoint`` (see the module docstring); None for providers without one."""
    return getattr(provider, "endpoint", None)


@dataclass(frozen=True)
class ProviderReply:
    text: str
    finish_reason: str | None  # in finish_reason()'s vocabulary (the client normalises it again)
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None  # when the provider reports it (fal/OpenRouter); else the price table
    batch_id: str | None = None  # the provider batch that answered it (batch mode: priced at the batch rate)


class Provider(Protocol):
    """A provider implements ``call`` (blocking; the client runs it in a thread pool sized to its
    concurrency) or ``acall`` (the same signature, async; run on the client's event loop). Both: ``acall``
    wins."""

    name: str

    def model_id(self, model: str | None) -> str:
        """The concrete model a request will use (resolves None to the default). Must not load anything."""

    def call(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        temperature: float,
        max_tokens: int,
        json_schema: dict[str, Any] | None,
        stop: list[str] | None,
        seed: int | None,
        timeout_s: float,
    ) -> ProviderReply:
        """One attempt. Raises RetryableError (429/5xx/timeout/connection) or ProviderError."""


class RemoteProvider:
    """Base of the providers that call a remote API through a vendor SDK (see the module docstring)."""

    name: ClassVar[str]
    default_key_env: ClassVar[str]  # the variable holding the key when ``api_key_env`` is not given
    default_model_id: ClassVar[str]  # the model when neither the request nor the settings name one
    default_base_url: ClassVar[str | None] = None  # the server the SDK talks to when no base URL is given
    base_url_env: ClassVar[str | None] = None  # the variable the SDK reads a base URL from when none is given

    def __init__(self, *, api_key_env: str | None = None, base_url: str | None = None,
                 default_model: str | None = None, timeout_s: float = 120.0):
        self.api_key_env = api_key_env or self.default_key_env
        self.base_url = base_url
        self.default_model = default_model or self.default_model_id
        self.timeout_s = timeout_s
        self._client: Any = None
        self._client_scope: object = None
        self._lock = threading.Lock()

    def model_id(self, model: str | None) -> str:
        return model or self.default_model

    @property
    def endpoint(self) -> str | None:
        """The server the calls go to, as the cache key names it: the base URL given, else the one the SDK
        reads from ``base_url_env``; None when that is the provider's default server (or it has none)."""
        url = self.base_url or (os.environ.get(self.base_url_env) if self.base_url_env else None)
        return endpoint_id(url, self.default_base_url)

    def _api_key(self) -> str | None:
        """The key, read from the environment now (never kept in settings)."""
        return os.environ.get(self.api_key_env)

    def _scope(self) -> object:
        """What an SDK client is bound to (default: nothing); a change makes a new one (the async openai client
        belongs to one event loop)."""
        return None

    def _make_sdk(self) -> Any:
        """A new SDK client; raises ConfigError when the key is missing."""
        raise NotImplementedError

    def _sdk(self) -> Any:
        """The SDK client, made on first use (importing the SDK then, not when the provider is built)."""
        scope = self._scope()
        with self._lock:
            if self._client is None or self._client_scope is not scope:
                self._client = self._make_sdk()
                self._client_scope = scope
            return self._client


@contextmanager
def sdk_errors(sdk: Any, timeout_s: float, *, retry_status: tuple[int, ...] = ()) -> Iterator[None]:
    """The openai and anthropic SDKs raise the same family of errors (both are generated by Stainless): map it
    onto the client's two kinds. ``retry_status``: more HTTP statuses worth retrying (Anthropic's 529)."""
    try:
        yield
    except sdk.APITimeoutError as exc:
        raise RetryableError(f"timeout after {timeout_s:g}s") from exc
    except sdk.APIConnectionError as exc:
        raise RetryableError(f"connection error: {exc}") from exc
    except sdk.APIStatusError as exc:
        message = f"HTTP {exc.status_code}: {exc.message}"
        if retryable_status(exc.status_code) or exc.status_code in retry_status:
            raise RetryableError(message, parse_retry_after(exc.response.headers)) from exc
        raise ProviderError(message) from exc
    except ValueError as exc:  # a 200 whose body is not JSON (proxy error pages and the like)
        raise RetryableError(f"malformed response body: {exc}") from exc
    except sdk.APIError as exc:  # e.g. a body that is not a chat completion / message
        raise RetryableError(f"malformed response: {exc}") from exc
