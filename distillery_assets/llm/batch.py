"""Batch mode: a task's cache misses go to the provider's batch API instead of online requests.

Every request still runs the client's one path (``LLMClient._run``: cache, claim, finish-reason rules, JSON
validation with re-asks, a larger budget after ``length``, the cache, one usage row); only the provider call in
the middle is different: instead of an HTTP request it becomes a line of a batch (``BatchRound.call``) and
waits for that batch's answer. A re-ask or a larger-budget ask is a line of the next batch; an item the batch
answered ``errored``, ``expired`` or ``canceled`` is a named failure of that attempt and goes into the next
batch too (or online, with ``batch_retry_online``), up to ``max_attempts``; a request refused as invalid is
not asked again. A batch answer is priced at the provider's batch rate (``pricing.BATCH_DISCOUNT``).

When a batch is sent: each ``LLMClient.each`` call is one *round*. The round counts the requests still working
locally (cache look-ups, claims, parsing an answer); when every one of them is either done or waiting for a
batch answer, the waiting calls are sent, split by the provider's limits on requests and bytes per batch.

The ledger (``data/llm_cache/batches/<provider>/<batch id>.json``, written atomically and synced) records each
batch -- its id and, per line, the request key, the call and its ``custom_id`` -- the moment the provider
accepted it, before any waiting; the catalogue gets a row in ``llm_batches`` and the task's journal a
``batch`` line then too. The ``custom_id`` is a hash of the request key, the call's messages and budget and the
attempt number, so a run asks the same call under the same id: a run that finds a call in an open batch of the
ledger (a run before it was killed, or timed out waiting) polls that batch instead of sending the call again.
Once a call's usage row is written its id is *settled* (``<batch id>.settled``, one line per id): a settled call
is never taken from that batch again, and a batch whose calls are all settled is closed. Answers of an ended
batch that no run asks for any more (the run that sent them died, and the next asked for other rows) are
cached and get their usage rows anyway when a later round looks at the batch: paid answers are never lost.

Lost submission replies. Before a batch is sent, an *intent* is recorded (``<provider>/intents/<key>.json``,
atomic): the submission key (a hash of the batch's ``custom_id``\ s, ``submission_key``), the time, the number of
requests and the calls. It is removed once the batch is in the ledger, or once the provider refused it. A
submission whose answer never came (a timeout, a dropped connection: the provider may have accepted it) is not
sent again in that run: its calls fail as ``batch_submission_lost`` and the intent stays. A later run that asks
any of those calls first looks the submission up (``BatchAPI.candidates``) before sending anything:

* OpenAI: the key is in the batch's ``metadata`` (and in the input file's name): ``batches.list`` back to the
  intent's time finds it exactly; found, it is adopted (ledgered as if its answer had come); not found, the
  provider never took it and the calls are sent.
* Anthropic (no metadata on a Message Batch): the batches created since the intent (two minutes' slack for clock
  skew) whose ``request_counts`` add up to the intent's requests, less those another ledger entry already
  names. None: sent. Exactly one: adopted, and checked once it has ended -- every ``custom_id`` of its results
  must be one of the intent's, otherwise it is un-adopted (never taken as ours again) and the calls fail as
  ``batch_submission_unknown``. Several: the calls fail as ``batch_submission_unknown`` naming the candidates,
  and are not sent again unless ``DISTILLERY_LLM_BATCH_RESUBMIT_UNKNOWN=1`` (``LLMSettings.
  batch_resubmit_unknown``, the ``llm`` resource's ``batch_resubmit_unknown``) allows it (paying twice, perhaps).
  A listing that cannot be read is ``batch_submission_unknown`` too (nothing sent).

Runs that overlap never send one request twice: a request is sent (online or in a batch) only by the run that
holds its claim (``cache.ResponseCache.claim``); the others wait for its answer in the cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery_assets.io import atomic_write_text
from distillery_assets.io.hashing import sha256_text
from distillery_assets.llm.errors import ConfigError, ProviderError, RetryableError
from distillery_assets.llm.jsonout import JSONReplyError, parse_json_reply
from distillery_assets.llm.pricing import BATCH_DISCOUNT, estimate_cost
from distillery_assets.llm.providers.base import LENGTH, STOP, finish_reason
from distillery_assets.llm.providers.batches import (ERRORED, OUTCOMES, PENDING, SUCCEEDED, BatchAPI, BatchItem,
                                                     BatchStatus)
from distillery_assets.llm.types import ChatMessage

if TYPE_CHECKING:
    from distillery_assets.llm.client import LLMClient

_ROUND: ContextVar[BatchRound | None] = ContextVar("distillery_llm_batch_round", default=None)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
PROGRESS_EVERY_S = 60.0  # a progress line at least this often while a batch runs (and whenever its counts change)


def current_round() -> BatchRound | None:
    """The batch round of the request running now (None: online)."""
    return _ROUND.get()


def call_id(request_key: str, messages: list[ChatMessage], max_tokens: int, attempt: int) -> str:
    """The ``custom_id`` of one call: the same request, messages, budget and attempt give the same id in every
    run. 64 hex characters (Anthropic's custom_id allows ``[a-zA-Z0-9_-]{1,64}``)."""
    return sha256_text(json.dumps({"key": request_key, "messages": [[m.role, m.content] for m in messages],
                                   "max_tokens": int(max_tokens), "attempt": int(attempt)},
                                  sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def submission_key(call_ids: list[str] | set[str]) -> str:
    """The key of one submission: a hash of its lines' ``custom_id``\ s (order does not matter)."""
    return sha256_text("\n".join(sorted(call_ids)))


SUBMISSION_LOST, SUBMISSION_UNKNOWN = "submission_lost", "submission_unknown"  # failures: batch_<outcome>
RESUBMIT_UNKNOWN_ENV = "DISTILLERY_LLM_BATCH_RESUBMIT_UNKNOWN"  # LLMSettings.batch_resubmit_unknown


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class BatchCall:
    """One provider call waiting for a batch."""

    call_id: str
    request_key: str
    messages: list[ChatMessage]
    kwargs: dict[str, Any]  # model, temperature, max_tokens, json_schema, stop, seed
    tag: str
    accept_truncated: bool = False
    batch_id: str | None = None
    future: asyncio.Future | None = None

    def ledger_line(self) -> dict[str, Any]:
        return {"request_key": self.request_key, "tag": self.tag, "accept_truncated": self.accept_truncated,
                "messages": [[m.role, m.content] for m in self.messages], "kwargs": self.kwargs}


class BatchLedger:
    """The batches sent and not yet closed, one JSON file each, under ``root/<provider>/`` (see the module
    docstring). Safe across processes: files are replaced atomically, settled ids are appended."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _file(self, provider: str, batch_id: str, suffix: str = ".json") -> Path:
        return self.root / provider / (_SAFE.sub("_", batch_id) + suffix)

    def record(self, entry: dict[str, Any]) -> Path:
        path = self._file(entry["provider"], entry["batch_id"])
        atomic_write_text(path, json.dumps(entry, ensure_ascii=False, sort_keys=True))
        return path

    def settled(self, provider: str, batch_id: str) -> set[str]:
        try:
            text = self._file(provider, batch_id, ".settled").read_text(encoding="utf-8")
        except OSError:
            return set()
        return {line.strip() for line in text.splitlines() if line.strip()}

    def settle(self, provider: str, batch_id: str, call_ids: list[str]) -> None:
        """Mark calls settled: their usage rows are written (one ``os.write`` of whole lines, O_APPEND)."""
        if not call_ids:
            return
        path = self._file(provider, batch_id, ".settled")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, "".join(c + "\n" for c in call_ids).encode("ascii"))
        finally:
            os.close(fd)

    def open_entries(self, provider: str, endpoint: str | None) -> list[dict[str, Any]]:
        """The open batches of this provider and server, each with ``unsettled`` (its calls not settled yet);
        an open batch whose calls are all settled is closed here."""
        folder = self.root / provider
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # replaced under us or unreadable: the next look reads it
            if entry.get("state") != "open" or entry.get("endpoint") != endpoint:
                continue
            settled = self.settled(provider, entry["batch_id"])
            entry["unsettled"] = [c for c in entry["calls"] if c not in settled]
            if not entry["unsettled"]:
                self.close(entry, "every call settled")
                continue
            out.append(entry)
        return out

    def close(self, entry: dict[str, Any], why: str) -> None:
        entry = {k: v for k, v in entry.items() if k != "unsettled"}
        entry.update(state="closed", closed_at=_now(), closed_because=why)
        self.record(entry)

    # -- intents: a submission about to be sent (see the module docstring)
    def _intent_file(self, provider: str, key: str) -> Path:
        return self.root / provider / "intents" / (_SAFE.sub("_", key) + ".json")

    def write_intent(self, intent: dict[str, Any]) -> None:
        atomic_write_text(self._intent_file(intent["provider"], intent["submission_key"]),
                          json.dumps(intent, ensure_ascii=False, sort_keys=True))

    def drop_intent(self, provider: str, key: str) -> None:
        self._intent_file(provider, key).unlink(missing_ok=True)

    def intents(self, provider: str, endpoint: str | None) -> list[dict[str, Any]]:
        """The intents of this provider and server whose batch is not in the ledger; one whose batch is (a run
        killed between the ledger write and removing it) is removed here."""
        folder = self.root / provider / "intents"
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not paths:  # the usual case: no ledger reading at all
            return []
        ledgered = {e.get("submission_key") for e in self.entries(provider) if not e.get("unadopted")}
        out = []
        for path in paths:
            try:
                intent = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if intent.get("submission_key") in ledgered:
                path.unlink(missing_ok=True)
            elif intent.get("endpoint") == endpoint:
                out.append(intent)
        return out

    def entries(self, provider: str) -> list[dict[str, Any]]:
        """Every ledger entry of this provider, open or closed, any server."""
        folder = self.root / provider
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return out


@dataclass
class BatchReport:
    """What batch mode did in one client (summed over rounds): the asset's metadata."""

    batch_ids: list[str] = field(default_factory=list)
    resumed_batch_ids: list[str] = field(default_factory=list)
    submitted: int = 0  # calls sent in new batches
    resumed: int = 0  # calls taken from a batch an earlier run sent
    outcomes: Counter = field(default_factory=Counter)  # succeeded / errored / expired / canceled, per call
    cost_usd: float = 0.0  # batch answers at the batch price
    online_cost_usd: float = 0.0  # the same answers at the online list price
    unpriced: int = 0
    known: set[str] = field(default_factory=set)  # batches this client sent or waited on (its own calls' batches)

    def add_cost(self, cost: float | None, online: float | None) -> None:
        """One batch answer's price at the batch rate and at the online list price."""
        if cost is None or online is None:
            self.unpriced += 1
        else:
            self.cost_usd += cost
            self.online_cost_usd += online

    def metadata(self, provider: str | None = None) -> dict[str, Any]:
        share = BATCH_DISCOUNT.get(provider or "", 1.0)
        return {
            "llm_batch_mode": True,
            "cost_note": (f"batch answers estimated at {provider}'s batch prices ({share:.0%} of the list price per "
                          "token); anything asked online at the list prices"),
            "llm_batch_ids": ", ".join(self.batch_ids) or "none",
            "llm_batch_resumed_ids": ", ".join(self.resumed_batch_ids) or "none",
            "llm_batch_calls_submitted": self.submitted,
            "llm_batch_calls_resumed": self.resumed,
            **{f"llm_batch_{o}": int(self.outcomes.get(o, 0)) for o in OUTCOMES},
            "llm_batch_cost_usd": round(self.cost_usd, 6),
            "llm_batch_online_cost_usd": round(self.online_cost_usd, 6),
            "llm_batch_saved_usd": round(self.online_cost_usd - self.cost_usd, 6),
            "llm_batch_unpriced_answers": self.unpriced,
        }


BatchSink = Callable[[str, dict[str, Any]], None]  # ("submitted" | "ended" | ..., row) -> the catalogue


class BatchRound:
    """The batch side of one ``LLMClient.each`` call (see the module docstring)."""

    def __init__(self, client: LLMClient, api: BatchAPI, ledger: BatchLedger, label: str,
                 on_batch: Callable[[dict[str, Any]], None] | None = None):
        self.client, self.api, self.ledger, self.label = client, api, ledger, label
        self.on_batch = on_batch
        self.busy = 0
        self.queue: list[BatchCall] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._runner: asyncio.Task | None = None
        self._swept: set[str] = set()

    # -- the requests' side
    def start(self, requests: int) -> Token:
        self.busy = requests
        self._runner = asyncio.ensure_future(self._run())
        return _ROUND.set(self)

    def idle(self) -> None:
        """A request stopped working locally (done, waiting for a batch, or for another run's claim)."""
        self.busy -= 1
        if self.busy <= 0 and self.queue:
            self._wake.set()

    def active(self) -> None:
        self.busy += 1

    async def call(self, call: BatchCall) -> BatchItem:
        call.future = asyncio.get_running_loop().create_future()
        self.queue.append(call)
        self.idle()
        return await call.future

    def _resolve(self, call: BatchCall, item: BatchItem) -> None:
        if call.future is not None and not call.future.done():
            self.busy += 1  # its request works again (and says idle() when it waits or ends)
            call.future.set_result(item)

    def detach(self, token: Token) -> None:
        """Stop being the current round of new tasks (those made since ``start`` keep it)."""
        _ROUND.reset(token)

    async def close(self) -> None:
        """Stop polling (a batch still open stays in the ledger for the next run) and close the batches whose
        calls are all settled now."""
        for task in [self._runner, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._runner, *self._tasks] if t is not None], return_exceptions=True)
        try:
            await self._thread(self.ledger.open_entries, self.api.name, self.api.endpoint)
        except OSError as exc:
            self._log("warning", f"{self.label}: batch ledger not tidied: {exc}")

    # -- the batches' side
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.busy > 0 or not self.queue:
                continue
            calls, self.queue = self.queue, []
            task = asyncio.ensure_future(self._dispatch(calls))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _log(self, level: str, message: str) -> None:
        getattr(self.client.log, level)(self.client.scrub(message))

    async def _dispatch(self, calls: list[BatchCall]) -> None:
        try:
            await self._dispatch_inner(calls)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected SDK error must not leave requests waiting forever
            self._log("error", f"{self.label}: batch mode failed: {type(exc).__name__}: {exc}")
            for call in calls:
                self._resolve(call, BatchItem(ERRORED, error=f"batch mode failed: {type(exc).__name__}: {exc}",
                                              retryable=False))

    async def _dispatch_inner(self, calls: list[BatchCall]) -> None:
        provider, endpoint = self.api.name, self.api.endpoint
        entries = await self._thread(self.ledger.open_entries, provider, endpoint)
        open_calls = {cid: entry for entry in entries for cid in entry["unsettled"]}
        groups: dict[str, tuple[dict[str, Any], list[BatchCall]]] = {}
        fresh: list[BatchCall] = []
        seen: set[str] = set()
        for call in calls:
            entry = open_calls.get(call.call_id)
            if entry is not None:
                call.batch_id = entry["batch_id"]
                groups.setdefault(entry["batch_id"], (entry, []))[1].append(call)
            elif call.call_id in seen:  # one call twice in a round cannot happen (key locks); never send it twice
                self._resolve(call, BatchItem(ERRORED, error="the same call twice in one round", retryable=True))
            else:
                seen.add(call.call_id)
                fresh.append(call)
        self.client.batch_report.known.update(groups)  # batches this client waits on: never swept by it
        if groups:
            resumed = sum(len(g[1]) for g in groups.values())
            self.client.batch_report.resumed += resumed
            for bid in groups:
                if bid not in self.client.batch_report.resumed_batch_ids:
                    self.client.batch_report.resumed_batch_ids.append(bid)
            self._log("info", f"{self.label}: {resumed} call(s) are in {len(groups)} batch(es) an earlier run sent "
                              f"({', '.join(groups)}): polling those, not sending them again")
        if fresh:
            fresh = await self._resolve_intents(fresh, groups)
        for chunk in self._chunks(fresh):
            entry = await self._submit(chunk)
            if entry is not None:
                groups[entry["batch_id"]] = (entry, [call for call, _ in chunk])
                self.client.batch_report.known.add(entry["batch_id"])
        known = self.client.batch_report.known
        others = [e for e in entries if e["batch_id"] not in known and e["batch_id"] not in self._swept]
        self._swept.update(e["batch_id"] for e in others)
        await asyncio.gather(*(self._wait(entry, group) for entry, group in groups.values()),
                             *(self._sweep(entry) for entry in others))

    async def _resolve_intents(self, fresh: list[BatchCall],
                               groups: dict[str, tuple[dict[str, Any], list[BatchCall]]]) -> list[BatchCall]:
        """Calls of an earlier submission whose answer was lost: adopted into the batch the provider made of it,
        failed as ``batch_submission_unknown``, or (the provider never took it) returned to be sent. The rest of
        ``fresh`` is returned as it is."""
        provider, endpoint = self.api.name, self.api.endpoint
        intents = await self._thread(self.ledger.intents, provider, endpoint)
        by_id = {call.call_id: call for call in fresh}
        taken: set[str] = set()
        for intent in intents:
            mine = [by_id[cid] for cid in intent["calls"] if cid in by_id and cid not in taken]
            if not mine:
                continue
            key = intent["submission_key"]
            taken.update(call.call_id for call in mine)
            try:
                found = await self._thread(self.api.candidates, key, int(intent["requests"]),
                                           float(intent["intent_epoch"]))
            except (RetryableError, ProviderError, ConfigError) as exc:
                self._unknown(mine, f"the submission {key[:12]} of {intent['intent_at']} got no answer and the "
                                    f"provider's batches could not be listed to find it ({exc}): not sent again")
                continue
            known = {e.get("batch_id") for e in await self._thread(self.ledger.entries, provider)}
            if self.api.exact_lookup and any(bid in known for bid in found):  # another run ledgered it meanwhile
                self._unknown(mine, f"the submission {key[:12]} is batch {next(b for b in found if b in known)}, "
                                    "which another run has ledgered since: not sent again (the next run polls it)")
                continue
            found = [bid for bid in found if bid not in known and bid not in intent.get("rejected", [])]
            if len(found) == 1 or (found and self.api.exact_lookup):
                entry = self._adopt(intent, found[0], "metadata" if self.api.exact_lookup else "request count")
                if len(found) > 1:
                    self._log("warning", f"{self.label}: submission {key[:12]} is in {len(found)} batches "
                                         f"({', '.join(found)}); adopted the newest, {found[0]}")
                for call in mine:
                    call.batch_id = entry["batch_id"]
                self.client.batch_report.resumed += len(mine)
                groups[entry["batch_id"]] = (entry, mine)
                continue
            if not found:
                self._log("info", f"{self.label}: the submission {key[:12]} of {intent['intent_at']} whose answer "
                                  f"was lost is not among {provider}'s batches: the provider never took it; sending "
                                  f"its {len(mine)} call(s) now")
                await self._thread(self.ledger.drop_intent, provider, key)
                continue
            if self.client.batch_resubmit_unknown:
                self._log("warning", f"{self.label}: the submission {key[:12]} of {intent['intent_at']} may be any "
                                     f"of {len(found)} batches ({', '.join(found)}); {RESUBMIT_UNKNOWN_ENV}=1: "
                                     f"sending its {len(mine)} call(s) again (they may be paid twice)")
                await self._thread(self.ledger.drop_intent, provider, key)
                continue
            self._unknown(mine, f"the submission {key[:12]} of {intent['intent_at']} ({intent['requests']} "
                                f"request(s)) got no answer and may be any of {len(found)} batches "
                                f"({', '.join(found)}): not sent again; set {RESUBMIT_UNKNOWN_ENV}=1 to send it")
        # adopted calls wait on their batch, unknown ones are answered; the rest (never taken by the provider) go
        return [call for call in fresh if call.call_id not in taken or (
            call.batch_id is None and not (call.future is not None and call.future.done()))]

    def _unknown(self, calls: list[BatchCall], why: str) -> None:
        self._log("error", f"{self.label}: {why}")
        for call in calls:
            self._resolve(call, BatchItem(SUBMISSION_UNKNOWN, error=why, retryable=False))

    def _adopt(self, intent: dict[str, Any], batch_id: str, how: str) -> dict[str, Any]:
        """Record the batch the provider made of a submission whose answer was lost, as ``_submit`` would have."""
        entry = {k: v for k, v in intent.items() if k != "intent_epoch"}
        entry.update(batch_id=batch_id, created_at=_now(), state="open",
                     adopted={"by": how, "intent_at": intent["intent_at"], "run_id": self.client.run_id})
        self.ledger.record(entry)
        self.ledger.drop_intent(entry["provider"], entry["submission_key"])
        entry["unsettled"] = list(entry["calls"])
        report = self.client.batch_report
        report.known.add(batch_id)
        if batch_id not in report.resumed_batch_ids:
            report.resumed_batch_ids.append(batch_id)
        self._emit("submitted", {"batch_id": batch_id, "provider": entry["provider"], "model": entry.get("model"),
                                 "endpoint": entry.get("endpoint"), "tag": None, "run_id": self.client.run_id,
                                 "status": "adopted", "requests": entry["requests"], "bytes": entry.get("bytes"),
                                 "adopted_by": how, "submission_key": entry["submission_key"],
                                 "request_keys": sorted({c["request_key"] for c in entry["calls"].values()})})
        self._log("info", f"{self.label}: batch {batch_id} adopted: the submission {entry['submission_key'][:12]} "
                          f"of {intent['intent_at']} whose answer was lost (found by {how}); polling it, not sending "
                          f"its {entry['requests']} request(s) again")
        return entry

    def _foreign(self, entry: dict[str, Any], items: dict[str, BatchItem]) -> bool:
        """An adopted batch (found by its request count) whose results are not all the intent's: un-adopted --
        closed, and named in the intent (restored) as not ours, so no run adopts it again."""
        if (entry.get("adopted") or {}).get("by") != "request count" or set(items) <= set(entry["calls"]):
            return False
        intent = {k: v for k, v in entry.items() if k not in ("batch_id", "created_at", "state", "adopted",
                                                                "unsettled", "unadopted")}
        intent["intent_epoch"] = datetime.fromisoformat(entry["adopted"]["intent_at"]).timestamp()
        intent["intent_at"] = entry["adopted"]["intent_at"]
        intent["rejected"] = sorted({*intent.get("rejected", []), entry["batch_id"]})
        self.ledger.write_intent(intent)
        entry["unadopted"] = True
        self.ledger.close(entry, "un-adopted: its results carry custom_ids that are not the submission's")
        self._log("error", f"{self.label}: batch {entry['batch_id']} was adopted by its request count but its "
                           f"results are not the submission {entry['submission_key'][:12]}'s: un-adopted")
        return True

    def _chunks(self, calls: list[BatchCall]) -> list[list[tuple[BatchCall, dict[str, Any]]]]:
        """``calls`` with their batch lines, split by the provider's limits on requests and bytes per batch. A
        call whose line cannot be built (a schema the provider cannot take) fails at once."""
        chunks: list[list[tuple[BatchCall, dict[str, Any]]]] = []
        current: list[tuple[BatchCall, dict[str, Any]]] = []
        size = 0
        for call in calls:
            try:
                line = self.api.line(call.call_id, call.messages, call.kwargs)
            except (ConfigError, ValueError, TypeError) as exc:
                self._resolve(call, BatchItem(ERRORED, error=f"configuration: {exc}", retryable=False))
                continue
            line_size = self.api.size(line)
            if line_size > self.api.max_bytes:
                self._resolve(call, BatchItem(ERRORED, error=f"one request of {line_size:,} bytes is over the "
                                              f"{self.api.max_bytes:,}-byte batch limit", retryable=False))
                continue
            if current and (len(current) >= self.api.max_requests or size + line_size > self.api.max_bytes):
                chunks.append(current)
                current, size = [], 0
            current.append((call, line))
            size += line_size
        if current:
            chunks.append(current)
        return chunks

    async def _submit(self, chunk: list[tuple[BatchCall, dict[str, Any]]]) -> dict[str, Any] | None:
        """Send one batch and record it (ledger, catalogue, journal) before anything waits on it; None (each call
        answered with the reason) when the provider refused it or its answer was lost. An intent naming the
        submission is recorded first and removed once the batch is ledgered or refused (see the module
        docstring): a lost answer leaves it for the next run to look the batch up."""
        client = self.client
        calls, lines = [c for c, _ in chunk], [line for _, line in chunk]
        key = submission_key([c.call_id for c in calls])
        meta = {"distillery_label": self.label[:500], "distillery_run_id": str(client.run_id or "")[:500]}
        intent = {"submission_key": key, "provider": self.api.name, "endpoint": self.api.endpoint,
                  "model": calls[0].kwargs.get("model"), "label": self.label, "run_id": client.run_id,
                  "intent_at": _now(), "intent_epoch": time.time(), "requests": len(calls),
                  "bytes": sum(self.api.size(line) for line in lines),
                  "calls": {c.call_id: c.ledger_line() for c in calls}}
        self.ledger.write_intent(intent)  # before the provider can have it: a lost answer is looked up by this
        attempt = 0
        while True:
            attempt += 1
            try:
                status = await self._thread(self.api.submit, lines, meta, key)
                break
            except RetryableError as exc:
                # no HTTP status (a timeout, a dropped connection, an unreadable body): the provider may have
                # taken the batch; sending it again now could pay twice, so the next run looks it up first
                lost = not str(exc).startswith("HTTP ")
                if lost or attempt >= client.max_attempts:
                    why = (f"the batch submission got no answer ({exc}): the provider may have accepted (and will "
                           f"bill) it, so it is not sent again in this run; the next run looks up submission "
                           f"{key[:12]} among the provider's batches before sending anything" if lost else
                           f"the batch submission failed {attempt} time(s): {exc}")
                    self._log("error", f"{self.label}: {why}")
                    for call in calls:
                        self._resolve(call, BatchItem(SUBMISSION_LOST if lost else ERRORED, error=why,
                                                      retryable=False))
                    return None
                wait = client._wait(exc, attempt)
                self._log("warning", f"{self.label}: batch submission: {exc}; retry {attempt}/"
                                     f"{client.max_attempts - 1} in {wait:.1f}s")
                await client._asleep(wait)
            except (ProviderError, ConfigError) as exc:
                self.ledger.drop_intent(self.api.name, key)  # refused: nothing was taken
                why = f"the provider refused the batch: {exc}"
                self._log("error", f"{self.label}: {why}")
                for call in calls:
                    self._resolve(call, BatchItem(ERRORED, error=why, retryable=False))
                return None
        entry = {"batch_id": status.batch_id, "provider": self.api.name, "endpoint": self.api.endpoint,
                 "model": calls[0].kwargs.get("model"), "label": self.label, "run_id": client.run_id,
                 "created_at": _now(), "state": "open", "requests": len(calls),
                 "bytes": sum(self.api.size(line) for line in lines),
                 "calls": intent["calls"], "submission_key": key}
        self.ledger.record(entry)  # before any waiting: a killed run's successor polls this batch
        self.ledger.drop_intent(self.api.name, key)
        for call in calls:
            call.batch_id = status.batch_id
        report = client.batch_report
        report.batch_ids.append(status.batch_id)
        report.submitted += len(calls)
        summary = {"batch_id": status.batch_id, "provider": self.api.name, "model": entry["model"],
                   "endpoint": self.api.endpoint, "tag": calls[0].tag, "run_id": client.run_id,
                   "status": status.status, "requests": len(calls), "bytes": entry["bytes"],
                   "request_keys": sorted({c.request_key for c in calls})}
        self._emit("submitted", summary)
        self._log("info", f"{self.label}: batch {status.batch_id} sent to {self.api.name}: {len(calls)} request(s), "
                          f"{entry['bytes']:,} bytes; status {status.status}"
                          + (f"; {status.estimate}" if status.estimate else ""))
        return entry

    def _emit(self, event: str, summary: dict[str, Any]) -> None:
        for hook in (self.client.batch_sink, None if event != "submitted" else self.on_batch):
            if hook is None:
                continue
            try:
                hook(event, summary) if hook is self.client.batch_sink else hook(summary)
            except Exception as exc:  # bookkeeping never fails the batch: the ledger file holds the record
                self._log("warning", f"{self.label}: batch {summary.get('batch_id')} {event} not recorded: {exc}")

    def _progress(self, status: BatchStatus, started: float) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in status.counts.items())
        return (f"{self.label}: batch {status.batch_id} ({self.api.name}) {status.status}: {counts}; "
                f"{time.monotonic() - started:.0f}s elapsed" + (f"; {status.estimate}" if status.estimate else ""))

    async def _poll(self, batch_id: str, deadline: float | None) -> BatchStatus | str:
        """The batch's status once it ended; a string (why not) when it could not be read or the wait ran out."""
        client = self.client
        started, last_line, last_at = time.monotonic(), None, 0.0
        while True:
            try:
                status = await self._thread(self.api.status, batch_id)
            except RetryableError as exc:
                self._log("warning", f"{self.label}: batch {batch_id}: status not read ({exc}); trying again")
                status = None
            except (ProviderError, ConfigError) as exc:
                return f"batch {batch_id} could not be read: {exc}"
            if status is not None:
                line = self._progress(status, started)
                if status.ended or line.split(";")[0] != last_line or time.monotonic() - last_at >= PROGRESS_EVERY_S:
                    self._log("info", line)
                    last_line, last_at = line.split(";")[0], time.monotonic()
                if status.ended:
                    return status
            if deadline is not None and time.monotonic() >= deadline:
                return (f"batch {batch_id} still {status.status if status else 'unread'} after "
                        f"{client.batch_wait_s:g}s (batch_wait_s): the next run polls it again and does not send "
                        "these requests again")
            await asyncio.sleep(client.batch_poll_s)

    async def _results(self, batch_id: str) -> dict[str, BatchItem] | str:
        for attempt in range(1, self.client.max_attempts + 1):
            try:
                return await self._thread(self.api.results, batch_id)
            except RetryableError as exc:
                if attempt >= self.client.max_attempts:
                    return f"the results of batch {batch_id} could not be read: {exc}"
                await self.client._asleep(self.client._wait(exc, attempt))
            except (ProviderError, ConfigError) as exc:
                return f"the results of batch {batch_id} could not be read: {exc}"
        return f"the results of batch {batch_id} could not be read"

    async def _wait(self, entry: dict[str, Any], calls: list[BatchCall]) -> None:
        batch_id = entry["batch_id"]
        wait_s = self.client.batch_wait_s
        status = await self._poll(batch_id, time.monotonic() + wait_s if wait_s else None)
        if isinstance(status, str):  # not ended in time, or unreadable: the ledger keeps it open for the next run
            self._log("warning", f"{self.label}: {status}")
            for call in calls:
                self._resolve(call, BatchItem(PENDING, error=status, retryable=False))
            return
        if status.failure is not None:
            self.ledger.close(entry, status.failure)
            self._emit("ended", self._ended_row(entry, status, {}))
            for call in calls:
                self._resolve(call, BatchItem(ERRORED, error=f"batch {batch_id}: {status.failure}", retryable=False))
            return
        items = await self._results(batch_id)
        if isinstance(items, str):
            self._log("warning", f"{self.label}: {items}; the next run reads them (the batch stays in the ledger)")
            for call in calls:
                self._resolve(call, BatchItem(PENDING, error=items, retryable=False))
            return
        if self._foreign(entry, items):
            why = (f"batch {batch_id} (adopted by its request count) is not this submission's; the submission "
                   f"{entry['submission_key'][:12]} is looked up again by the next run")
            for call in calls:
                call.batch_id = None  # nothing of that batch is this call's
                self._resolve(call, BatchItem(SUBMISSION_UNKNOWN, error=why, retryable=False))
            return
        self._tally(entry, status, items)
        for call in calls:
            item = items.get(call.call_id) or BatchItem(
                ERRORED, error=f"batch {batch_id} has no result for this request", retryable=True)
            self._resolve(call, item)
        await self._orphans(entry, items, exclude={c.call_id for c in calls})

    def _tally(self, entry: dict[str, Any], status: BatchStatus, items: dict[str, BatchItem]) -> None:
        mine = [items[c] for c in entry["calls"] if c in items and c in entry.get("unsettled", entry["calls"])]
        counts = Counter(item.outcome for item in mine)
        counts[ERRORED] += sum(1 for c in entry.get("unsettled", entry["calls"]) if c not in items)
        self.client.batch_report.outcomes.update(counts)
        self._emit("ended", self._ended_row(entry, status, counts))
        by_outcome = ", ".join(f"{o} {counts.get(o, 0)}" for o in OUTCOMES)
        self._log("info", f"{self.label}: batch {entry['batch_id']} ended ({status.status}): {by_outcome}")

    def _ended_row(self, entry: dict[str, Any], status: BatchStatus, counts: Counter | dict) -> dict[str, Any]:
        return {"batch_id": entry["batch_id"], "provider": entry["provider"], "model": entry.get("model"),
                "endpoint": entry.get("endpoint"), "tag": None, "run_id": self.client.run_id,
                "status": status.status, "requests": entry.get("requests"),
                **{o: int(counts.get(o, 0)) for o in OUTCOMES}, "failure": status.failure}

    async def _sweep(self, entry: dict[str, Any]) -> None:
        """An open batch of an earlier run that this round does not wait for: if it has ended, its answers that
        no run took are cached and get their usage rows now; if not, it is left for a later round."""
        try:
            status = await self._thread(self.api.status, entry["batch_id"])
        except (ProviderError, ConfigError, RetryableError) as exc:
            self._log("warning", f"{self.label}: batch {entry['batch_id']} of an earlier run not read: {exc}")
            return
        if not status.ended:
            self._log("info", f"{self.label}: batch {entry['batch_id']} of an earlier run is still {status.status} "
                              f"({len(entry['unsettled'])} call(s)); the run that asks for them takes their answers")
            return
        if status.failure is not None:
            self.ledger.close(entry, status.failure)
            return
        items = await self._results(entry["batch_id"])
        if not isinstance(items, str) and not self._foreign(entry, items):
            await self._orphans(entry, items, exclude=set())

    async def _orphans(self, entry: dict[str, Any], items: dict[str, BatchItem], exclude: set[str]) -> None:
        """Answers in an ended batch for calls no request of this round waits for (see the module docstring)."""
        client, provider, batch_id = self.client, entry["provider"], entry["batch_id"]
        settled = self.ledger.settled(provider, batch_id)
        done: list[str] = []
        for cid, line in entry["calls"].items():
            if cid in exclude or cid in settled:
                continue
            item = items.get(cid)
            if item is None or item.outcome != SUCCEEDED or item.reply is None:
                done.append(cid)  # nothing was answered, nothing billed: the request is asked again when asked
                continue
            key = line["request_key"]
            claim = client.cache.claim(key) if client.cache is not None else None
            if client.cache is not None and claim is None:
                continue  # a live run is asking this request: its answer and its row are that run's
            try:
                if cid in self.ledger.settled(provider, batch_id):
                    continue
                row = self._orphan_row(entry, line, item)
                client._record_row(row)
                done.append(cid)
            finally:
                if claim is not None:
                    claim.release()
        self.ledger.settle(provider, batch_id, done)
        if done:
            self._log("info", f"{self.label}: batch {batch_id}: {len(done)} answer(s) no request of this run waits "
                              "for were settled (cached when usable, a usage row for each one paid)")

    def _orphan_row(self, entry: dict[str, Any], line: dict[str, Any], item: BatchItem) -> dict[str, Any]:
        client, reply = self.client, item.reply
        assert reply is not None
        key, model = line["request_key"], line["kwargs"].get("model") or entry.get("model") or "?"
        reason = finish_reason(reply.finish_reason)
        ok = reason == STOP or (reason == LENGTH and line.get("accept_truncated"))
        error, parsed = None, None
        schema = line["kwargs"].get("json_schema")
        if not ok:
            error = (f"finish_reason={reason}: not a result (an answer of batch {entry['batch_id']} for a call no "
                     "run waited for)")
        elif schema is not None:
            try:
                parsed = parse_json_reply(reply.text, schema)
            except JSONReplyError as exc:
                ok, error = False, f"invalid JSON in a batch answer no run waited for: {exc.reason}"
        if ok and client.cache is not None and client._cached(key, None, accept_truncated=bool(
                line.get("accept_truncated"))) is None:
            client.cache.put(key, {"request_key": key, "provider": entry["provider"], "model": model,
                                   "tag": line.get("tag"), "text": reply.text, "parsed": parsed,
                                   "finish_reason": reason, "input_tokens": reply.input_tokens,
                                   "output_tokens": reply.output_tokens, "created_at": _now(),
                                   "batch_id": entry["batch_id"]})
        cost = estimate_cost(entry["provider"], model, reply.input_tokens, reply.output_tokens, batch=True)
        online = estimate_cost(entry["provider"], model, reply.input_tokens, reply.output_tokens)
        client.batch_report.add_cost(cost, online)
        return {"request_key": key, "provider": entry["provider"], "model": model, "tag": line.get("tag"),
                "ok": ok, "error": error, "finish_reason": reason, "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens, "latency_s": 0.0, "cost_usd": cost, "cached": False,
                "created_at": _now(), "run_id": client.run_id, "attempts": 1, "batch_ids": [entry["batch_id"]],
                "online_cost_usd": online, "batch_orphan": True}
