"""LLM tasks: the one way domain code gets work done by an LLM.

A task says three things and nothing else (cache, limits, retries, JSON re-asks and usage rows belong to
the client):

* ``response_format``: ``None`` for plain text, or a pydantic model: the request then carries its JSON
  schema and the client returns a schema-valid ``parsed`` dict (re-asking on its own when it is not);
* ``prompt(row) -> LLMRequest``;
* ``parse(row, result) -> record | Reject``: called only for answers that came back whole (``result.ok``);
  a record is any JSON-able value, a :class:`Reject` says why the answer is not usable. A whole reply that
  never matched the JSON schema (the client re-asked already) is a reject ``invalid_json`` without parse.

and a ``key(row)`` that names the row in rejects, failures and the journal.

``run_task(task, rows, client, journal=...)`` asks for every row concurrently through a :class:`TaskClient`
(the ``LLMClient``; tests drive it over ``providers.scripted.ScriptedProvider``) and streams: each answer is
parsed (and a record handed to ``on_record(row, record, result)``; both run on the client's event loop
thread, so keep them short) as soon as it arrives, or, for ``ordered = True`` tasks, as soon as
every earlier row is done, so parsing state (a duplicate memory) sees rows in input order. A call that
produced no answer (provider error, retries exhausted) or only part of one (cut off at ``max_tokens``, stopped
by a content filter, a refusal, a tool call: any finish but a natural stop) is a :class:`Failure`: never a
record, never journalled, so the next run asks again. ``run.usage`` counts them by reason.

With a journal (a JSONL file), every finished row (record or reject) is one fsynced line holding the
row's request key; a later run with the same journal skips rows whose line matches the request it would
send now (in batch mode, each provider batch sent is a ``{"batch": {batch_id, provider, request_keys...}}`` line
too, written before the batch is waited on: what a row's request is waiting for, read back as ``batches``), so a killed run resumes after the last finished row and a changed prompt or model starts that
row afresh. A torn last line (killed mid-write) is dropped and redone; a corrupt line elsewhere is an
error naming file and line.

Modelled on bespokelabs curator's ``LLM`` subclass (``prompt`` + ``parse`` + ``response_format``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from distillery_assets.io import JsonlError, atomic_write_text, iter_jsonl_lines
from distillery_assets.llm.providers.base import Provider, endpoint_of
from distillery_assets.llm.types import LLMRequest, LLMResult

Row = TypeVar("Row")


class TaskClient(Protocol):
    """What :func:`run_task` needs of a client; :class:`distillery_assets.llm.client.LLMClient` is the one
    implementation (its provider names the request keys the journal holds; ``each`` delivers the answers)."""

    provider: Provider

    def each(self, requests: Sequence[LLMRequest], on_result: Callable[[int, LLMResult], None],
             label: str | None = None) -> None: ...


@dataclass(frozen=True)
class Reject:
    """An answer that came back whole but is not usable; journalled as done (asking again gives the same).
    Not :class:`distillery_assets.rejects.Reject` (``{source, reason}``): it names the row's key, carries the
    model's detail, and its shape is what the journals on disk hold."""

    key: str
    reason: str
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Failure:
    """No usable answer (provider error, cut off at max_tokens, invalid JSON after re-asks): asked again next run."""

    key: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LLMTask(Generic[Row]):
    """Subclass and give ``prompt`` and ``parse`` (and ``key`` when rows are not strings)."""

    name: ClassVar[str] = "task"  # the usage rows' tag and the progress label
    response_format: ClassVar[type[BaseModel] | None] = None
    ordered: ClassVar[bool] = True  # parse in input order (deterministic state) or as answers arrive

    def key(self, row: Row) -> str:
        return str(row)

    def prompt(self, row: Row) -> LLMRequest:
        raise NotImplementedError

    def parse(self, row: Row, result: LLMResult) -> Any:
        """The record for a whole answer, or a Reject. Default: the stripped text (or the parsed object)."""
        if self.response_format is not None:
            return self.response(result).model_dump()
        text = (result.text or "").strip()
        return text if text else Reject(self.key(row), "empty_reply", "the model returned no text")

    # helpers for subclasses -----------------------------------------------------------------------------
    def response(self, result: LLMResult) -> BaseModel:
        """``result.parsed`` as an instance of ``response_format`` (the client already checked the schema)."""
        assert self.response_format is not None
        return self.response_format.model_validate(result.parsed or {})

    def request(self, row: Row) -> LLMRequest:
        """``prompt(row)`` with the response format's schema and the task's tag filled in."""
        req = self.prompt(row)
        update: dict[str, Any] = {}
        if self.response_format is not None and req.json_schema is None:
            update["json_schema"] = self.response_format.model_json_schema()
        if req.tag == "untagged":
            update["tag"] = self.name
        return req.model_copy(update=update) if update else req


@dataclass
class TaskUsage:
    requests: int = 0
    cache_hits: int = 0
    provider_calls: int = 0  # attempts that reached the provider, retries and re-asks included
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown_for: int = 0
    # answers that were not results, by LLMResult.error_kind ("length", "content_filter", "refusal",
    # "tool_call", "invalid_json", "provider", "claimed"...); as_dict() flattens it to failed_<reason> counts
    failures_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, result: LLMResult) -> None:
        usage = result.usage
        if not result.ok:
            reason = result.error_kind or "provider"
            self.failures_by_reason[reason] = self.failures_by_reason.get(reason, 0) + 1
        self.requests += 1
        self.cache_hits += result.cached
        self.provider_calls += result.attempts
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        if not result.cached:
            if usage.cost_usd is None:
                self.cost_unknown_for += 1
            else:
                self.cost_usd += float(usage.cost_usd)

    def as_dict(self) -> dict[str, Any]:
        """Numbers only (callers sum these dicts): ``failed`` and one ``failed_<reason>`` per failure reason."""
        out = asdict(self)
        out["cost_usd"] = round(self.cost_usd, 6)
        by_reason = out.pop("failures_by_reason")
        out["failed"] = sum(by_reason.values())
        out.update({f"failed_{reason}": n for reason, n in sorted(by_reason.items())})
        return out


@dataclass
class TaskRun(Generic[Row]):
    """What one run of a task produced. ``records`` and ``keys`` are in input order (resumed rows included)."""

    task: str
    rows: int = 0
    records: list[Any] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the key of each record, same order
    rejects: list[Reject] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    resumed: int = 0
    usage: TaskUsage = field(default_factory=TaskUsage)
    finish_reasons: dict[str, int] = field(default_factory=dict)
    results: dict[str, LLMResult] = field(default_factory=dict)  # key -> the answer of each row asked this run

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in self.rejects:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        return {"rows": self.rows, "records": len(self.records), "rejects": len(self.rejects),
                "failures": len(self.failures), "resumed_from_journal": self.resumed,
                "reject_reasons": reasons, **self.usage.as_dict()}


class JournalError(ValueError):
    """A journal line other than the last one is not valid: the message names file and line."""


class TaskJournal:
    """One fsynced JSON line per finished row: ``{"key", "request_key", "record" | "reject"}``; in batch mode one
    per provider batch sent: ``{"batch": {...}}``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self.batches: list[dict[str, Any]] = []
        self.dropped_torn_line = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        good: list[bytes] = []
        last_number = max((n for n, line in enumerate(lines, 1) if line.strip()), default=0)
        for number, entry in iter_jsonl_lines(lines, self.path, on_error="yield", objects=False):
            is_last = number == last_number
            is_batch = isinstance(entry, dict) and isinstance(entry.get("batch"), dict) and "key" not in entry
            problem = (entry.cause or entry.reason) if isinstance(entry, JsonlError) else (
                None if isinstance(entry, dict) and ("key" in entry or is_batch) else "not a journal entry (no 'key')")
            if problem is not None:
                if is_last:
                    self.dropped_torn_line = True
                    continue
                raise JournalError(f"{self.path}:{number}: corrupt journal line ({problem})")
            if is_last and not raw.endswith(b"\n"):
                self.dropped_torn_line = True  # parsed, but never finished with its newline: redo it
                continue
            good.append(lines[number - 1])
            if is_batch:
                self.batches.append(entry["batch"])
            else:
                self.entries[entry["key"]] = entry
        if self.dropped_torn_line:
            atomic_write_text(self.path, "".join(g.decode("utf-8") + "\n" for g in good))

    def get(self, key: str, request_key: str) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        return entry if entry is not None and entry.get("request_key") == request_key else None

    def append(self, entry: dict[str, Any]) -> None:
        self._write(entry)
        self.entries[entry["key"]] = entry

    def append_batch(self, batch: dict[str, Any]) -> None:
        """A provider batch sent for rows of this task (batch mode), before it is waited on."""
        self._write({"batch": batch})
        self.batches.append(batch)

    def _write(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _request_key(client: TaskClient, request: LLMRequest) -> str:
    provider = client.provider
    return request.key(provider.name, provider.model_id(request.model), endpoint_of(provider))


def run_task(task: LLMTask[Row], rows: Iterable[Row], client: TaskClient, *,
             journal: Path | TaskJournal | None = None, label: str | None = None,
             on_record: Callable[[Row, Any, LLMResult], None] | None = None,
             log: Callable[[str], None] | None = None) -> TaskRun[Row]:
    """Run ``task`` over ``rows`` through ``client``; see the module docstring."""
    rows = list(rows)
    label = label or task.name
    run: TaskRun[Row] = TaskRun(task=task.name, rows=len(rows))
    book = TaskJournal(journal) if isinstance(journal, (str, Path)) else journal
    keys = [task.key(row) for row in rows]
    dupes = sorted({k for k in keys if keys.count(k) > 1}) if len(set(keys)) != len(keys) else []
    if dupes:
        raise ValueError(f"{task.name}: row keys must be unique; repeated: {dupes[:5]}")

    outcomes: list[tuple[str, Any] | None] = [None] * len(rows)  # ("record", value) | ("reject", Reject) | ("failure", Failure)
    todo: list[int] = []
    requests: list[LLMRequest] = []
    request_keys: dict[int, str] = {}
    for index, row in enumerate(rows):
        req = task.request(row)
        if book is not None:
            request_keys[index] = _request_key(client, req)
            entry = book.get(keys[index], request_keys[index])
            if entry is not None:
                run.resumed += 1
                outcomes[index] = (("reject", Reject(**entry["reject"])) if "reject" in entry
                                   else ("record", entry["record"]))
                continue
        todo.append(index)
        requests.append(req)
    if run.resumed and log:
        log(f"{label}: {run.resumed}/{len(rows)} rows already finished in {book.path}")

    def settle(index: int, result: LLMResult) -> None:
        row, key = rows[index], keys[index]
        run.usage.add(result)
        run.results[key] = result
        reason = result.finish_reason or "unknown"
        run.finish_reasons[reason] = run.finish_reasons.get(reason, 0) + 1
        if not result.ok and result.error_kind == "invalid_json":
            # a whole reply, re-asked, that still does not match the schema: the model's answer, not a fault of
            # the way there; asking again gives the same (the client re-asked already), so it is a reject
            parsed: Any = Reject(key, "invalid_json", (result.error or "")[:500])
        elif not result.ok:
            outcomes[index] = ("failure", Failure(key, result.error or "unknown error"))
            return
        else:
            try:
                parsed = task.parse(row, result)
            except (ValidationError, ValueError, KeyError, TypeError) as exc:
                parsed = Reject(key, "unparseable_reply", f"{type(exc).__name__}: {exc}"[:500])
        outcomes[index] = ("reject", parsed) if isinstance(parsed, Reject) else ("record", parsed)
        if book is not None:
            body = {"reject": parsed.to_dict()} if isinstance(parsed, Reject) else {"record": parsed}
            book.append({"key": key, "request_key": request_keys[index], **body})
        if on_record is not None and not isinstance(parsed, Reject):
            on_record(row, parsed, result)

    waiting: dict[int, LLMResult] = {}
    next_up = 0  # position in `todo` of the next row an ordered task may parse

    def handle(position: int, result: LLMResult) -> None:
        nonlocal next_up
        if not task.ordered:
            settle(todo[position], result)
            return
        waiting[position] = result
        while next_up in waiting:
            settle(todo[next_up], waiting.pop(next_up))
            next_up += 1

    if book is not None and getattr(client, "batch_mode", False):  # each batch sent: a journal line first
        client.each(requests, handle, label, on_batch=book.append_batch)
    else:
        client.each(requests, handle, label)  # answers as they arrive, on the client's event loop thread

    for index, outcome in enumerate(outcomes):
        if outcome is None:
            raise RuntimeError(f"{label}: no outcome for row {keys[index]!r}")
        kind, value = outcome
        if kind == "record":
            run.records.append(value)
            run.keys.append(keys[index])
        elif kind == "reject":
            run.rejects.append(value)
        else:
            run.failures.append(value)
    return run
