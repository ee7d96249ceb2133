"""The providers' batch APIs, through their official SDKs: what ``llm.batch`` submits, polls and reads.

* ``anthropic``: the Message Batches API. ``messages.batches.create(requests=[{custom_id, params}])`` (``params``
  is exactly the body ``messages.create`` gets online: ``AnthropicProvider.params``), ``retrieve`` ->
  ``processing_status`` (``in_progress`` | ``canceling`` | ``ended``) and ``request_counts``, ``results`` -> one
  JSONL line per request: ``succeeded`` (a ``Message``), ``errored``, ``canceled`` or ``expired``. Limits: 100,000
  requests or 256 MB per batch, whichever comes first (the batch-processing guide).
* ``openai``: the Batch API. ``files.create(purpose="batch")`` of a JSONL file of ``{custom_id, method, url,
  body}`` lines (``body`` is what ``chat.completions.create`` gets online: ``OpenAIProvider.body``),
  ``batches.create(endpoint="/v1/chat/completions", completion_window="24h")``, ``retrieve`` -> ``status``
  (``validating`` | ``in_progress`` | ``finalizing`` | ``completed`` | ``failed`` | ``expired`` | ``cancelling`` |
  ``cancelled``) and ``request_counts``; ``output_file_id`` and ``error_file_id`` hold the answers and the failed
  items (``batch_expired`` for what the window did not reach). Limits: 50,000 requests and 200 MB per input file
  (the SDK's ``batch_create_params``).

A submission whose HTTP answer was lost (``llm.batch``: the intent record) is found again by ``candidates``:
OpenAI's batches carry the submission key in their ``metadata`` (and the input file its name), so
``batches.list`` (newest first, paginated with ``after``) finds it exactly; Anthropic's Message Batches have no
metadata, so ``messages.batches.list`` (newest first, ``after_id``) names the batches created since the intent
(less ``CLOCK_SLACK_S``) whose ``request_counts`` add up to the intent's number of requests -- the batcher decides
what to do with none, one or several.

Each answer is parsed by the provider's own ``reply`` (the same code as an online answer) and carries the batch
id, so the client prices it at the batch rate. SDK retries are off (``max_retries=0``), as online: the batcher
owns them. Synchronous SDK clients: the batcher calls them from a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from distillery_assets.llm.errors import ConfigError, ProviderError
from distillery_assets.llm.providers.base import ProviderReply, sdk_errors
from distillery_assets.llm.types import ChatMessage

SUCCEEDED, ERRORED, EXPIRED, CANCELED = "succeeded", "errored", "expired", "canceled"
OUTCOMES = (SUCCEEDED, ERRORED, EXPIRED, CANCELED)
PENDING = "pending"  # not an answer: the batch was still open when the run stopped waiting (or unreadable)
SUBMISSION_KEY = "distillery_submission"  # the OpenAI batch metadata field that carries the submission key
CLOCK_SLACK_S = 120.0  # a batch listed as created this long before the intent is still a candidate (clock skew)


@dataclass(frozen=True)
class BatchItem:
    """What a batch answered for one request: a reply (``succeeded``), or why not. ``retryable``: asking again can
    help (expired, canceled, a server-side error); a refused request (400) is not asked again."""

    outcome: str
    reply: ProviderReply | None = None
    error: str | None = None
    retryable: bool = True


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    status: str  # the provider's own word
    ended: bool
    counts: dict[str, int] = field(default_factory=dict)
    estimate: str | None = None  # what the provider says about when it ends (expires_at, the window)
    failure: str | None = None  # a batch the provider refused as a whole (OpenAI "failed": validation errors)


class BatchAPI:
    """What the batcher needs of a provider's batch API (one subclass per provider). ``exact_lookup``: whether
    ``candidates`` finds a lost submission by its key (True) or only by its time and size (False)."""

    name: ClassVar[str]
    exact_lookup: ClassVar[bool]
    list_page_size: ClassVar[int] = 100  # batches per page when listing them (both APIs allow 100)
    max_requests: ClassVar[int]
    max_bytes: ClassVar[int]

    def __init__(self, provider: Any):
        self.provider = provider
        self._sync: Any = None

    @property
    def endpoint(self) -> str | None:
        return self.provider.endpoint

    def line(self, custom_id: str, messages: list[ChatMessage], kwargs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str], key: str) -> BatchStatus:
        """Send one batch; ``key`` is its submission key (``llm.batch.submission_key``)."""
        raise NotImplementedError

    def candidates(self, key: str, requests: int, since: float) -> list[str]:
        """The ids of the batches that may be the submission ``key`` of ``requests`` requests whose answer was
        lost, created at or after ``since`` (epoch seconds, less ``CLOCK_SLACK_S``), newest first."""
        raise NotImplementedError

    def status(self, batch_id: str) -> BatchStatus:
        raise NotImplementedError

    def results(self, batch_id: str) -> dict[str, BatchItem]:
        raise NotImplementedError

    @staticmethod
    def size(line: dict[str, Any]) -> int:
        """Bytes the line adds to the batch (its JSON and a newline)."""
        return len(json.dumps(line, ensure_ascii=False).encode("utf-8")) + 1


class AnthropicBatchAPI(BatchAPI):
    name = "anthropic"
    exact_lookup = False
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def _sdk(self):
        if self._sync is None:
            import anthropic

            key = self.provider._api_key()
            if not key:
                raise ConfigError(f"provider anthropic: environment variable {self.provider.api_key_env} is not set")
            self._sync = anthropic.Anthropic(api_key=key, base_url=self.provider.base_url, max_retries=0,
                                             timeout=self.provider.timeout_s)
        return self._sync

    def line(self, custom_id: str, messages: list[ChatMessage], kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": self.provider.params(
            messages, model=kwargs["model"], max_tokens=kwargs["max_tokens"], json_schema=kwargs["json_schema"],
            stop=kwargs["stop"])}

    def _status(self, batch: Any) -> BatchStatus:
        counts = batch.request_counts
        return BatchStatus(
            batch.id, batch.processing_status, batch.processing_status == "ended",
            {"processing": counts.processing, SUCCEEDED: counts.succeeded, ERRORED: counts.errored,
             CANCELED: counts.canceled, EXPIRED: counts.expired},
            estimate=f"ends by {batch.expires_at.isoformat()}" if getattr(batch, "expires_at", None) else None)

    def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str], key: str) -> BatchStatus:
        import anthropic

        with sdk_errors(anthropic, self.provider.timeout_s, retry_status=(529,)):
            return self._status(self._sdk().messages.batches.create(requests=lines))

    def candidates(self, key: str, requests: int, since: float) -> list[str]:
        """No metadata on a Message Batch: the batches created since the intent with as many requests."""
        import anthropic

        out = []
        with sdk_errors(anthropic, self.provider.timeout_s, retry_status=(529,)):
            # newest first; the SDK pages on with ``after_id``
            for batch in self._sdk().messages.batches.list(limit=self.list_page_size):
                if batch.created_at.timestamp() < since - CLOCK_SLACK_S:
                    break
                counts = batch.request_counts
                total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
                if total == requests:
                    out.append(batch.id)
        return out

    def status(self, batch_id: str) -> BatchStatus:
        import anthropic

        with sdk_errors(anthropic, self.provider.timeout_s, retry_status=(529,)):
            return self._status(self._sdk().messages.batches.retrieve(batch_id))

    def results(self, batch_id: str) -> dict[str, BatchItem]:
        import anthropic

        out: dict[str, BatchItem] = {}
        with sdk_errors(anthropic, self.provider.timeout_s, retry_status=(529,)):
            for line in self._sdk().messages.batches.results(batch_id):
                result = line.result
                if result.type == SUCCEEDED:
                    out[line.custom_id] = BatchItem(SUCCEEDED, self.provider.reply(result.message, batch_id))
                elif result.type == ERRORED:
                    error = getattr(result.error, "error", None)
                    kind = getattr(error, "type", "error")
                    out[line.custom_id] = BatchItem(ERRORED, error=f"{kind}: {getattr(error, 'message', '')}",
                                                    retryable=kind != "invalid_request_error")
                else:  # canceled / expired: never processed, asked again
                    out[line.custom_id] = BatchItem(result.type, error=f"the request was {result.type} by the batch")
        return out


class OpenAIBatchAPI(BatchAPI):
    name = "openai"
    exact_lookup = True
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    path = "/v1/chat/completions"
    _ENDED = {"completed", "failed", "expired", "cancelled"}

    def _sdk(self):
        if self._sync is None:
            import openai

            key = self.provider._api_key()
            if not key:
                if not self.provider.base_url:
                    raise ConfigError(f"provider openai: environment variable {self.provider.api_key_env} is not set")
                key = "not-needed"
            self._sync = openai.OpenAI(api_key=key, base_url=self.provider.base_url, max_retries=0,
                                       timeout=self.provider.timeout_s)
        return self._sync

    def line(self, custom_id: str, messages: list[ChatMessage], kwargs: dict[str, Any]) -> dict[str, Any]:
        body = self.provider.body(messages, model=kwargs["model"], temperature=kwargs["temperature"],
                                  max_tokens=kwargs["max_tokens"], json_schema=kwargs["json_schema"],
                                  stop=kwargs["stop"], seed=kwargs["seed"])
        return {"custom_id": custom_id, "method": "POST", "url": self.path, "body": body}

    def _status(self, batch: Any) -> BatchStatus:
        counts = batch.request_counts
        total = counts.total if counts else 0
        done = (counts.completed + counts.failed) if counts else 0
        failure = None
        if batch.status == "failed":
            errors = [f"{e.code}: {e.message}" + (f" (line {e.line})" if getattr(e, "line", None) else "")
                      for e in ((batch.errors.data or []) if batch.errors else [])]
            failure = "the provider refused the batch: " + ("; ".join(errors[:5]) or "no reason given")
        ends = (datetime.fromtimestamp(batch.expires_at, timezone.utc).isoformat() if batch.expires_at else None)
        estimate = f"window {batch.completion_window}" + (f", ends by {ends}" if ends else "")
        return BatchStatus(batch.id, batch.status, batch.status in self._ENDED,
                           {"total": total, "processing": max(total - done, 0),
                            "completed": counts.completed if counts else 0, "failed": counts.failed if counts else 0},
                           estimate=estimate, failure=failure)

    def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str], key: str) -> BatchStatus:
        import openai

        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        client = self._sdk()
        with sdk_errors(openai, self.provider.timeout_s):
            uploaded = client.files.create(file=(f"distillery-batch-{key}.jsonl", data, "application/jsonl"),
                                           purpose="batch")
            batch = client.batches.create(input_file_id=uploaded.id, endpoint=self.path, completion_window="24h",
                                          metadata={**metadata, SUBMISSION_KEY: key})
        return self._status(batch)

    def candidates(self, key: str, requests: int, since: float) -> list[str]:
        """The batches whose metadata carries ``key`` (``batches.list``: newest first, back to the intent)."""
        import openai

        out = []
        with sdk_errors(openai, self.provider.timeout_s):
            # newest first; the SDK pages on with ``after``
            for batch in self._sdk().batches.list(limit=self.list_page_size):
                if batch.created_at < since - CLOCK_SLACK_S:
                    break
                if (batch.metadata or {}).get(SUBMISSION_KEY) == key:
                    out.append(batch.id)
        return out

    def status(self, batch_id: str) -> BatchStatus:
        import openai

        with sdk_errors(openai, self.provider.timeout_s):
            return self._status(self._sdk().batches.retrieve(batch_id))

    def _lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        text = self._sdk().files.content(file_id).text
        out = []
        for number, raw in enumerate(text.splitlines(), 1):
            if raw.strip():
                try:
                    out.append(json.loads(raw))
                except ValueError as exc:
                    raise ProviderError(f"batch file {file_id}:{number}: not JSON ({exc})") from exc
        return out

    def results(self, batch_id: str) -> dict[str, BatchItem]:
        import openai
        from openai.types.chat import ChatCompletion

        out: dict[str, BatchItem] = {}
        with sdk_errors(openai, self.provider.timeout_s):
            batch = self._sdk().batches.retrieve(batch_id)
            lines = self._lines(batch.output_file_id) + self._lines(batch.error_file_id)
        for line in lines:
            custom_id = str(line.get("custom_id"))
            response, error = line.get("response") or {}, line.get("error")
            status = response.get("status_code")
            if not error and status == 200:
                try:
                    completion = ChatCompletion.model_validate(response.get("body") or {})
                    out[custom_id] = BatchItem(SUCCEEDED, self.provider.reply(completion, batch_id))
                except Exception as exc:  # a body that is not a chat completion: asked again
                    out[custom_id] = BatchItem(ERRORED, error=f"malformed answer in the batch output: {exc}")
                continue
            code = (error or {}).get("code") or ((response.get("body") or {}).get("error") or {}).get("code")
            message = (error or {}).get("message") or ((response.get("body") or {}).get("error") or {}).get("message")
            if code == "batch_expired":
                out[custom_id] = BatchItem(EXPIRED, error=f"batch_expired: {message or 'not reached in the window'}")
            elif code == "batch_cancelled":
                out[custom_id] = BatchItem(CANCELED, error=f"batch_cancelled: {message or 'the batch was cancelled'}")
            else:
                retryable = status is None or status in (408, 409, 429) or status >= 500
                out[custom_id] = BatchItem(ERRORED, error=f"HTTP {status}: {code}: {message}", retryable=retryable)
        return out


def batch_api(provider: Any) -> BatchAPI:
    """The batch API of ``provider``; a ConfigError for a provider without one (local, fal)."""
    name = getattr(provider, "name", "?")
    if name == "anthropic":
        return AnthropicBatchAPI(provider)
    if name == "openai":
        return OpenAIBatchAPI(provider)
    raise ConfigError(f"provider {name!r} has no batch API (batch mode is for anthropic and openai): set "
                      "DISTILLERY_LLM_BATCH=0 (or the LLM resource's batch: false) for this provider")
