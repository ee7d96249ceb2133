"""``Catalog``: the DuckDB catalogue of artefacts, LLM calls and training runs.

DuckDB lets one process hold a database file for writing at a time, and Dagster's multiprocess
executor runs every step in its own process. So every operation here opens its own connection inside
an exclusive file lock on ``<db>.lock``, does its work in one transaction and closes the connection
before the lock is released. A DuckDB lock error (a process outside this class holding the file, such
as an interactive ``duckdb`` shell) is retried with backoff. Either wait is bounded
(``DISTILLERY_CATALOG_LOCK_TIMEOUT_S``, default 300 s), announced with a warning after a few seconds, and
ends in :class:`CatalogBusy` naming the file and the holder.

Rows are written ahead to a spool (:mod:`.spool`) before they are inserted: artefacts and LLM usage rows
reach ``catalog.spool/`` the moment they exist, and DuckDB in batches. What a killed process, or one that
found the catalogue busy, left there is recorded by the next process that writes to the catalogue
(:meth:`Catalog.recover`, run before its first write), so no file or paid call is left without its row.

``Catalog(path, read_only=True)`` (what the read commands of the CLI use) opens the file read-only: it
creates nothing, migrates nothing and leaves the file's bytes as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from filelock import FileLock, Timeout

from distillery_assets.catalog.hashing import Fingerprint, fingerprint
from distillery_assets.catalog.schema import DERIVED_QUERY, LINEAGE_QUERY, SOURCES_QUERY, TABLES, VIEWS
from distillery_assets.catalog.sources import SOURCE_PREFIX, default_roots, source_key, visible_files
from distillery_assets.catalog.spool import (Spool, any_dead, dead_spools, read_entries, spool_dir_for, spool_files,
                                             spool_for, unclosed_attempts)
from distillery_assets.catalog.untracked import Known, Untracked, find_untracked
from distillery_assets.paths import data_dir

log = logging.getLogger(__name__)

# (database path, inode) pairs whose schema this process has already created or checked.
_SCHEMA_READY: set[tuple[str, int]] = set()

LOCK_TIMEOUT_ENV = "DISTILLERY_CATALOG_LOCK_TIMEOUT_S"
WAIT_NOTICE_S = 2.0  # a wait for the catalogue longer than this is announced (a warning naming the holder)
INTERRUPTED = "interrupted"


def lock_timeout_s() -> float:
    """How long one operation waits for a catalogue another process holds (read when it waits)."""
    return float(os.environ.get(LOCK_TIMEOUT_ENV, "300"))

LLM_CALL_COLUMNS = (
    "request_key", "provider", "model", "tag", "ok", "error", "finish_reason", "input_tokens",
    "output_tokens", "latency_s", "cost_usd", "cached", "created_at", "run_id", "attempts",
)


_LLM_CALL_ARROW_TYPES = {
    "request_key": pa.string(), "provider": pa.string(), "model": pa.string(), "tag": pa.string(),
    "ok": pa.bool_(), "error": pa.string(), "finish_reason": pa.string(), "input_tokens": pa.int64(),
    "output_tokens": pa.int64(), "latency_s": pa.float64(), "cost_usd": pa.float64(), "cached": pa.bool_(),
    "created_at": pa.timestamp("us"), "run_id": pa.string(), "attempts": pa.int32(), "extra": pa.string(),
}


class CatalogError(RuntimeError):
    """The catalogue could not be opened or a row could not be recorded; the message names the file."""


class CatalogBusy(CatalogError):
    """Another process held the catalogue longer than the bounded wait. Rows already written ahead to the
    spool are not lost: the next process that writes to the catalogue records them."""


@dataclass(frozen=True)
class ArtifactRecord:
    id: int
    asset_key: str
    partition: str | None
    path: str  # as stored: relative to data_dir when inside it
    kind: str
    sha256: str
    bytes: int
    files: int
    record_count: int | None


@dataclass(frozen=True)
class InputRef:
    """An input of an artefact: a path (file or dir), optionally the asset that produced it, optionally the
    sha256 it had when it was read (otherwise it is hashed when the artefact is recorded)."""

    path: Path | str
    asset_key: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class NewArtifact:
    """One file or folder for :meth:`Catalog.record_artifacts`: its path, what it was made from, and optionally
    its record count (default: the lines of a .jsonl), metadata, and its fingerprint when already computed."""

    path: Path | str
    inputs: Sequence[Path | str | InputRef] = ()
    record_count: int | None = None
    metadata: Mapping[str, Any] | None = None
    fingerprint: Fingerprint | None = None


@dataclass(frozen=True)
class _Edge:
    """One artifact_inputs row in the making; ``source`` is set for an edited file still to be catalogued."""

    stored: str
    sha256: str | None
    asset_key: str | None
    source: Fingerprint | None = None


def _is_duckdb_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _as_timestamp(value: Any, field: str) -> datetime:
    if value is None:
        return _utcnow()
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    if isinstance(value, str):
        try:
            return _as_timestamp(datetime.fromisoformat(value), field)
        except ValueError as exc:
            raise ValueError(f"llm_calls field {field!r}: not an ISO timestamp: {value!r}") from exc
    raise ValueError(f"llm_calls field {field!r}: unsupported timestamp type {type(value).__name__}")


def _json(value: Any, field: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"catalogue field {field!r} is not JSON-serialisable: {exc}") from exc


def _llm_values(row: Mapping[str, Any], index: int) -> list[Any]:
    """One usage row as JSON-ready values in the order of ``LLM_CALL_COLUMNS`` plus ``extra`` (unknown keys)."""
    if not isinstance(row, Mapping):
        raise ValueError(f"llm_calls row {index}: expected a mapping, got {type(row).__name__}")
    if not row.get("request_key"):
        raise ValueError(f"llm_calls row {index}: field 'request_key' is missing or empty")
    values = [row.get(col) for col in LLM_CALL_COLUMNS]
    values[LLM_CALL_COLUMNS.index("created_at")] = _as_timestamp(row.get("created_at"), "created_at").isoformat()
    extra = {k: v for k, v in row.items() if k not in LLM_CALL_COLUMNS}
    return [*values, _json(extra or None, "extra")]


def _interrupted_row(request_key: str, markers: list[dict[str, Any]]) -> list[Any]:
    """The usage row of a request whose process died with ``markers`` (its attempts) sent and no outcome."""
    first = markers[0]
    row = {"request_key": request_key, "provider": first.get("provider"), "model": first.get("model"),
           "tag": first.get("tag"), "ok": False, "error_kind": INTERRUPTED, "cached": False,
           "error": (f"{INTERRUPTED}: the process ended while this request was in flight ({len(markers)} provider "
                     "call(s) sent, no outcome recorded); its tokens and cost are unknown"),
           "created_at": first.get("created_at"), "run_id": first.get("run_id"), "attempts": len(markers)}
    return _llm_values(row, 0)


def _decode_artifact(entry: dict[str, Any]) -> tuple:
    """The arguments of ``Catalog._insert_artifact`` (after the connection) from a spooled artefact entry."""
    edges = [_Edge(stored, sha, key, Fingerprint(**source) if source else None)
             for stored, sha, key, source in entry["edges"]]
    return (entry["asset_key"], entry["partition"], entry["run_id"], entry["path"], Fingerprint(**entry["fp"]),
            entry["record_count"], edges, entry["metadata"])


class Catalog:
    """One DuckDB file; safe to use from many processes at once (see module docstring)."""

    def __init__(self, path: Path | str | None = None, *, root: Path | str | None = None,
                 sources: Mapping[str, Path | str] | None = None, read_only: bool = False):
        self.path = Path(path) if path is not None else data_dir() / "catalog.duckdb"
        self.root = Path(root).resolve() if root is not None else data_dir()
        # label -> folder of edited files (default: inputs_dir() and config_dir()); see catalog.sources
        self.sources = {k: Path(v).resolve() for k, v in (sources or default_roots()).items()}
        self.read_only = read_only
        self.spool_dir = spool_dir_for(self.path)  # data/catalog.spool: rows written ahead (see .spool)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock")

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    # -- connections ---------------------------------------------------------------------------
    def _run(self, work, *, timeout_s: float | None = None, recovering: bool = False):
        """Run ``work(connection)`` in one transaction under the file lock; return its result. A write first
        replays what ended processes left in the spool, if there is any (:meth:`recover`). Waits at most
        ``timeout_s`` (default :func:`lock_timeout_s`) for a catalogue another process holds, with a warning
        naming the holder after ``WAIT_NOTICE_S``; then raises :class:`CatalogBusy`."""
        if not self.read_only and not recovering and any_dead(self.spool_dir):
            self._replay_dead_spools(timeout_s)
        timeout = lock_timeout_s() if timeout_s is None else max(0.0, timeout_s)
        deadline = time.monotonic() + timeout
        announced, delay = False, 0.05
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                self._lock.acquire(timeout=remaining if announced else min(remaining, WAIT_NOTICE_S))
            except Timeout:
                holder = f"another process holds its lock file {self._lock.lock_file}"
            else:
                try:
                    return self._transaction(work)
                except duckdb.Error as exc:  # only DuckDB's own lock error gets here: a process outside the lock
                    holder = f"a process outside Distillery holds the DuckDB file ({str(exc).splitlines()[0]})"
                finally:
                    self._lock.release()
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 2.0)
            if time.monotonic() >= deadline:
                raise CatalogBusy(f"catalogue {self.path} is busy: {holder}; gave up after {timeout:.0f}s "
                                  f"(${LOCK_TIMEOUT_ENV} sets the wait)")
            if not announced:
                announced = True
                log.warning(f"catalogue {self.path} is busy: {holder}; waiting up to {timeout:.0f}s "
                            f"(${LOCK_TIMEOUT_ENV})")

    def _transaction(self, work):
        """``work(connection)`` in one transaction (the caller holds the lock). Raises DuckDB's lock error as
        it is (the caller waits and retries); any other DuckDB error becomes a CatalogError naming the file."""
        try:
            con = self._open()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    result = work(con)
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(duckdb.Error):
                        con.execute("ROLLBACK")
                    raise
                return result
            finally:
                con.close()
        except duckdb.Error as exc:
            if _is_duckdb_lock_error(exc):
                raise
            raise CatalogError(f"catalogue {self.path}: {exc}") from exc

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Connect (caller holds the lock) and make sure the schema exists, once per file per process.
        Read-only: connect read-only and touch nothing (the schema is whatever the file has)."""
        if self.read_only:
            if not self.path.is_file():
                raise CatalogError(f"no catalogue at {self.path} (nothing has been recorded yet)")
            return duckdb.connect(str(self.path), read_only=True)
        con = duckdb.connect(str(self.path))
        try:
            marker = (str(self.path.resolve()), self.path.stat().st_ino)
            if marker not in _SCHEMA_READY:
                con.execute(TABLES)
                con.execute(VIEWS)
                self._prune_spool_bookkeeping(con)
                _SCHEMA_READY.add(marker)
        except BaseException:
            con.close()
            raise
        return con

    # -- paths ---------------------------------------------------------------------------------
    def relative(self, path: Path | str) -> str:
        """The stored form of a path: relative (posix) to data_dir when inside it, else absolute."""
        resolved = Path(path)
        if not resolved.is_absolute():
            resolved = self.root / resolved
        resolved = resolved.resolve()
        try:
            return resolved.relative_to(self.root).as_posix()
        except ValueError:
            return resolved.as_posix()

    def absolute(self, stored: str) -> Path:
        """Inverse of :meth:`relative`."""
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    # -- artefacts -----------------------------------------------------------------------------
    def record_artifact(
        self,
        *,
        asset_key: str,
        path: Path | str,
        partition: str | None = None,
        run_id: str | None = None,
        record_count: int | None = None,
        inputs: Iterable[Path | str | InputRef] = (),
        metadata: Mapping[str, Any] | None = None,
        fingerprint_: Fingerprint | None = None,
    ) -> ArtifactRecord:
        """Register a file or directory that already exists. sha256, bytes (and, for .jsonl, the
        record count) are computed here. Recording the same asset/partition/path/sha256/run twice
        returns the existing row instead of adding a duplicate.

        An input under a source folder (``inputs_dir()``, ``config_dir()``) named without an asset key is
        catalogued as a source on the way; a folder there counts file by file."""
        item = NewArtifact(path, tuple(inputs), record_count, metadata, fingerprint_)
        [record] = self.record_artifacts(asset_key=asset_key, items=[item], partition=partition, run_id=run_id)
        return record

    def record_artifacts(
        self,
        *,
        asset_key: str,
        items: Iterable[NewArtifact],
        partition: str | None = None,
        run_id: str | None = None,
    ) -> list[ArtifactRecord]:
        """:meth:`record_artifact` for many files of one asset and partition, each with its own inputs, in
        one transaction (hundreds of files are one lock and one commit; an input shared by many is hashed
        once). Returns the rows in the order of ``items``."""
        ids = self.spool_artifacts(asset_key=asset_key, items=items, partition=partition, run_id=run_id)
        self.commit()  # after it, every row spooled before it is committed (by it or by a commit it waited for)
        return self.committed_records(ids)

    def spool_artifacts(self, *, asset_key: str, items: Iterable[NewArtifact], partition: str | None = None,
                        run_id: str | None = None, memo: dict | None = None) -> list[str]:
        """Write the rows of files just written to this process's spool, fingerprinted now, without waiting for
        the catalogue: they are inserted by the next :meth:`commit` (of this process) or, if it dies first, by
        the next process that writes to the catalogue. Returns the spool ids (for :meth:`committed_records`).
        ``memo``: a dict kept across calls, so an input shared by many files is hashed once."""
        if not asset_key:
            raise ValueError("record_artifacts: asset_key is required")
        memo = {} if memo is None else memo
        spool = self._spool()
        ids = []
        for item in items:
            abs_path = self.absolute(self.relative(item.path))
            fp = item.fingerprint or fingerprint(abs_path)
            count = item.record_count if item.record_count is not None else fp.record_count
            edges = self._edges(item.inputs, memo)
            ids.append(spool.append({
                "kind": "artifact", "asset_key": asset_key, "partition": partition, "run_id": run_id,
                "path": self.relative(abs_path), "fp": dataclasses.asdict(fp), "record_count": count,
                "edges": [[e.stored, e.sha256, e.asset_key, dataclasses.asdict(e.source) if e.source else None]
                          for e in edges],
                "metadata": _json(dict(item.metadata) if item.metadata else None, "metadata"),
            }))
        return ids

    def committed_records(self, ids: Sequence[str]) -> list[ArtifactRecord]:
        """The catalogue rows of spooled artefacts (ids from :meth:`spool_artifacts`) committed since, in order;
        an id not committed yet is left out."""
        results = self._spool().results
        return [results.pop(i) for i in ids if i in results]

    # -- the spool: rows written ahead ---------------------------------------------------------------
    def _spool(self) -> Spool:
        if self.read_only:
            raise CatalogError(f"catalogue {self.path} is open read-only: nothing can be recorded")
        return spool_for(self.spool_dir)

    def commit(self, *, timeout_s: float | None = None) -> int:
        """Insert every row this process has spooled and not yet committed, in one transaction; returns how
        many. If the catalogue stays busy (:class:`CatalogBusy`, after ``timeout_s``), the rows stay in the
        spool, synced to disk, and the error says where: nothing is dropped."""
        spool = self._spool()
        with spool.drain_lock:
            batch = spool.pending()
            if not batch:
                return 0
            name = spool.path.name if spool.path is not None else "memory"
            try:
                results = self._run(lambda con: self._apply(con, batch, {e["id"]: name for e in batch})[0],
                                    timeout_s=timeout_s)
            except CatalogBusy as exc:
                spool.sync()
                raise CatalogBusy(f"{exc}. Nothing is lost: {len(batch)} row(s) wait in {spool.path or 'memory'} "
                                  "and are recorded by the next process that writes to the catalogue (the next "
                                  "run, or `python -m distillery_assets.catalog recover`)") from exc
            spool.results.update(results)
            spool.committed([e["id"] for e in batch])
            return len(batch)

    def spooled_paths(self, asset_key: str | None = None) -> set[str]:
        """Stored paths of artefacts in any spool file (of running processes too): written, row not in yet."""
        return {e["path"] for f in spool_files(self.spool_dir) for e in read_entries(f)
                if e["kind"] == "artifact" and (asset_key is None or e["asset_key"] == asset_key)}

    def recover(self, *, timeout_s: float | None = None) -> dict[str, int]:
        """Record what processes that ended left in the spool (a kill -9, a run that found the catalogue busy):
        their artefact and usage rows, each once, and an ``interrupted`` usage row for every provider call that
        was in flight when its process died; then this process's own uncommitted rows. Runs by itself before
        any write when there is something to replay; call it before planning work that trusts the catalogue.
        Returns counts."""
        stats = self._replay_dead_spools(timeout_s)
        stats["own_rows"] = self.commit(timeout_s=timeout_s)
        return stats

    def _replay_dead_spools(self, timeout_s: float | None) -> dict[str, int]:
        locked = []

        def work(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
            while locked:  # a try before this one that did not commit
                locked.pop().release()
            self._prune_spool_bookkeeping(con)
            locked.extend(dead_spools(self.spool_dir))
            entries = [e for dead in locked for e in dead.entries]
            where = {e["id"]: dead.path.name for dead in locked for e in dead.entries}
            _, stats = self._apply(con, entries, where, interrupted=True)
            return stats | {"spool_files": len(locked)}

        try:
            stats = self._run(work, timeout_s=timeout_s, recovering=True)
        except BaseException:
            for dead in locked:
                dead.release()
            raise
        for dead in locked:
            dead.remove()
        if locked:
            log.warning(f"catalogue {self.path}: recorded what {len(locked)} ended process(es) left in "
                        f"{self.spool_dir}: {stats['artifacts']} artefact row(s), {stats['llm_calls']} LLM usage "
                        f"row(s), {stats['interrupted']} of them for calls in flight when the process died")
        return stats

    def _prune_spool_bookkeeping(self, con: duckdb.DuckDBPyConnection) -> None:
        """Forget the committed ids of spool files that are gone (listed under the lock: no commit interleaves,
        and a file that still exists keeps its ids, so a replay of it skips them)."""
        names = [p.name for p in spool_files(self.spool_dir)]
        con.execute("DELETE FROM spool_applied WHERE NOT list_contains(?::VARCHAR[], spool)", [names])

    def _apply(self, con: duckdb.DuckDBPyConnection, entries: list[dict[str, Any]], spool_of: Mapping[str, str],
               *, interrupted: bool = False) -> tuple[dict[str, ArtifactRecord], dict[str, int]]:
        """Insert spool entries not committed before (their ids are not in ``spool_applied``) and record their
        ids, in the caller's transaction. ``interrupted``: also make a usage row of every attempt no row closed
        (the entries are of ended processes)."""
        done: set[str] = set()
        if entries:
            done = {row[0] for row in con.execute(
                "SELECT a.id FROM spool_applied a JOIN (SELECT unnest(?::VARCHAR[]) AS id) n ON a.id = n.id",
                [[e["id"] for e in entries]]).fetchall()}
        results: dict[str, ArtifactRecord] = {}
        calls: list[list[Any]] = []
        applied: list[str] = []
        for entry in entries:
            if entry["id"] in done:
                continue
            if entry["kind"] == "artifact":
                results[entry["id"]] = self._insert_artifact(con, *_decode_artifact(entry))
            elif entry["kind"] == "llm_call":
                calls.append(list(entry["values"]))
            else:
                continue
            applied.append(entry["id"])
        lost = 0
        if interrupted:
            open_attempts: dict[str, list[dict[str, Any]]] = {}
            for marker in unclosed_attempts(entries):
                if marker["id"] not in done:
                    open_attempts.setdefault(marker["request_key"], []).append(marker)
            for key, markers in open_attempts.items():
                calls.append(_interrupted_row(key, markers))
                applied.extend(m["id"] for m in markers)
                lost += 1
        if calls:
            self._insert_llm_values(con, calls)
        if applied:
            con.execute("INSERT INTO spool_applied SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), ?",
                        [applied, [spool_of.get(i, "?") for i in applied], _utcnow()])
        return results, {"artifacts": len(results), "llm_calls": len(calls), "interrupted": lost}

    def _insert_artifact(self, con: duckdb.DuckDBPyConnection, asset_key: str, partition: str | None,
                         run_id: str | None, stored: str, fp: Fingerprint, count: int | None, edges: list[_Edge],
                         meta_json: str | None) -> ArtifactRecord:
        existing = con.execute(
            "SELECT id FROM artifacts WHERE asset_key = ? AND partition IS NOT DISTINCT FROM ? "
            "AND path = ? AND sha256 = ? AND run_id IS NOT DISTINCT FROM ? ORDER BY id DESC LIMIT 1",
            [asset_key, partition, stored, fp.sha256, run_id],
        ).fetchone()
        if existing:
            artifact_id = existing[0]
        else:
            artifact_id = con.execute(
                "INSERT INTO artifacts (asset_key, partition, path, kind, sha256, bytes, files, "
                "record_count, run_id, created_at, metadata) VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                [asset_key, partition, stored, fp.kind, fp.sha256, fp.bytes, fp.files, count, run_id,
                 _utcnow(), meta_json],
            ).fetchone()[0]
            for edge in edges:
                self._record_source(con, edge)
            if edges:
                con.executemany(
                    "INSERT INTO artifact_inputs VALUES (?, ?, ?, ?)",
                    [[artifact_id, edge.stored, edge.sha256, edge.asset_key] for edge in edges],
                )
        return ArtifactRecord(artifact_id, asset_key, partition, stored, fp.kind, fp.sha256, fp.bytes, fp.files,
                              count)

    def _edges(self, refs: Iterable[Path | str | InputRef],
               memo: dict[tuple[str, str | None, str | None], list[_Edge]] | None = None) -> list[_Edge]:
        """Input rows, one per path; a source folder becomes one row per visible file inside it. ``memo``
        keeps the rows of inputs already seen (a batch whose files share an input hashes it once)."""
        edges: list[_Edge] = []
        for ref in refs:
            if not isinstance(ref, InputRef):
                ref = InputRef(ref)
            stored = self.relative(ref.path)
            key = (stored, ref.asset_key, ref.sha256)
            if memo is not None and key in memo:
                edges.extend(memo[key])
                continue
            found = self._edges_of(ref, stored)
            if memo is not None:
                memo[key] = found
            edges.extend(found)
        unique: dict[str, _Edge] = {}
        for edge in edges:
            unique.setdefault(edge.stored, edge)
        return list(unique.values())

    def _edges_of(self, ref: InputRef, stored: str) -> list[_Edge]:
        abs_path = self.absolute(stored)
        key = None if ref.asset_key else source_key(abs_path, self.sources)
        if key is None or not abs_path.exists():
            sha = ref.sha256 or (fingerprint(abs_path).sha256 if abs_path.exists() else None)
            return [_Edge(stored, sha, ref.asset_key or key)]
        edges = []
        for file in visible_files([abs_path]):
            fp = fingerprint(file)
            edges.append(_Edge(self.relative(file), ref.sha256 if file == abs_path and ref.sha256 else fp.sha256,
                               source_key(file, self.sources), fp))
        return edges

    @staticmethod
    def _record_source(con: duckdb.DuckDBPyConnection, edge: _Edge) -> None:
        """Add a row for a source file unless its newest row already has these bytes."""
        if edge.source is None or edge.sha256 is None:
            return
        newest = con.execute("SELECT sha256 FROM artifacts WHERE asset_key = ? AND path = ? ORDER BY id DESC LIMIT 1",
                             [edge.asset_key, edge.stored]).fetchone()
        if newest and newest[0] == edge.sha256:
            return
        fp = edge.source
        con.execute("INSERT INTO artifacts (asset_key, partition, path, kind, sha256, bytes, files, record_count, "
                    "run_id, created_at, metadata) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, NULL, ?, NULL)",
                    [edge.asset_key, edge.stored, fp.kind, edge.sha256, fp.bytes, fp.files, fp.record_count,
                     _utcnow()])

    def latest_artifacts(self, asset_key: str, partition: str | None = None) -> list[dict[str, Any]]:
        """Newest row per partition of ``asset_key`` (only ``partition`` when given)."""
        sql = "SELECT * FROM latest_artifacts WHERE asset_key = ?"
        params: list[Any] = [asset_key]
        if partition is not None:
            sql += " AND partition = ?"
            params.append(partition)
        return self.query(sql + " ORDER BY partition", params)

    def latest_artifact(self, asset_key: str, partition: str | None) -> dict[str, Any] | None:
        """Newest row of exactly this asset and partition (``None`` = unpartitioned), or None."""
        rows = self.query("SELECT * FROM artifacts WHERE asset_key = ? AND partition IS NOT DISTINCT FROM ? "
                          "ORDER BY id DESC LIMIT 1", [asset_key, partition])
        return rows[0] if rows else None

    def paths_in_run(self, asset_key: str, partition: str | None, run_id: str | None) -> int:
        """How many distinct paths one run recorded for this asset and partition (``None`` matches
        ``None``): more than one means the run wrote several files, not one loadable value."""
        return self.query("SELECT count(DISTINCT path) AS n FROM artifacts WHERE asset_key = ? AND partition IS "
                          "NOT DISTINCT FROM ? AND run_id IS NOT DISTINCT FROM ?",
                          [asset_key, partition, run_id])[0]["n"]

    def artifact_inputs(self, artifact_id: int) -> list[dict[str, Any]]:
        """The inputs recorded for one artefact, by path (read by tests and ad-hoc inspection of lineage edges)."""
        return self.query("SELECT * FROM artifact_inputs WHERE artifact_id = ? ORDER BY input_path",
                          [artifact_id])

    def lineage(self, asset_key: str) -> list[dict[str, Any]]:
        """Every (artefact <- input) edge behind the newest artefacts of ``asset_key``, transitively."""
        return self.query(LINEAGE_QUERY, [asset_key])

    def lineage_sources(self, asset_key: str) -> list[dict[str, Any]]:
        """The edited files behind the newest artefacts of ``asset_key``, transitively: one row per source
        version with ``source`` (its key), ``path``, ``sha256``, ``bytes``, ``read_by`` (the assets that read
        it) and ``now`` ("unchanged" | "edited" | "missing": the file on disk today against that sha256)."""
        rows = self.query(SOURCES_QUERY, [asset_key])
        for row in rows:
            path = self.absolute(row["path"])
            row["now"] = ("missing" if not path.is_file() else
                          "unchanged" if fingerprint(path).sha256 == row["sha256"] else "edited")
        return rows

    def verify(self, asset_key: str | None = None, *, trees: Iterable[Path | str] = ()) -> list[dict[str, Any]]:
        """Re-hash the newest artefact of every (asset, partition) -- or of one asset -- and compare with
        the catalogue; then walk the folders the catalogue knows files in (of that asset), and ``trees``
        whole (the corpus root), for files no row knows. Each row: asset_key, partition, path, status
        ("ok" | "missing" | "changed" | "uncatalogued") and note (for an uncatalogued file: the asset its
        catalogued siblings suggest, used by :meth:`repair`, or why none is).
        Sources (edited files under the source folders) are left out unless asked for by key: editing
        them is what people do; :meth:`lineage_sources` says which ones changed since a model was made."""
        rows = self.latest_artifacts(asset_key) if asset_key else self.query(
            "SELECT * FROM latest_artifacts WHERE NOT starts_with(asset_key, ?) ORDER BY asset_key, partition",
            [SOURCE_PREFIX])
        report = []
        for row in rows:
            path = self.absolute(row["path"])
            if not path.exists():
                status = "missing"
            else:
                status = "ok" if fingerprint(path).sha256 == row["sha256"] else "changed"
            report.append({"asset_key": row["asset_key"], "partition": row["partition"], "path": row["path"],
                           "status": status, "note": None})
        if asset_key is None or not asset_key.startswith(SOURCE_PREFIX):
            for found in self.untracked(asset_key, trees=trees):
                report.append({"asset_key": found.asset_key, "partition": found.partition,
                               "path": self.relative(found.path), "status": "uncatalogued", "note": found.note})
        return report

    def untracked(self, asset_key: str | None = None, *, trees: Iterable[Path | str] = ()) -> list[Untracked]:
        """Files on disk no row knows, in the folders under the data directory that hold catalogued files (of
        ``asset_key`` only, when given) and in ``trees``; see :mod:`.untracked`."""
        rows = self.query("SELECT asset_key, partition, path, kind FROM artifacts "
                          "QUALIFY row_number() OVER (PARTITION BY path ORDER BY id DESC) = 1")
        known = [Known(self.absolute(r["path"]), r["asset_key"], r["partition"], r["kind"]) for r in rows]
        produced = [k for k in known if not k.asset_key.startswith(SOURCE_PREFIX)]
        scope = [k for k in produced if asset_key is None or k.asset_key == asset_key]
        folders = {k.path.parent for k in scope if k.path.parent == self.root or self.root in k.path.parents}
        trees = [Path(t).resolve() for t in trees]
        if asset_key is not None:  # a tree is walked for an asset with files in it
            trees = [t for t in trees if any(t in k.path.parents for k in scope)]
        root = self.root
        skip = [self.path, Path(f"{self.path}.wal"), Path(f"{self.path}.lock"), self.spool_dir,
                root / "llm_cache", root / "dagster", *self.sources.values()]
        return find_untracked(known, folders=folders, trees=trees, skip=skip)

    def repair(self, found: Iterable[Untracked]) -> list[ArtifactRecord]:
        """Record files :meth:`untracked` found, as artefacts of the asset (and partition) their siblings
        suggest, with their sha256 (metadata ``repaired``; no run, no inputs). Files without a guess are
        skipped. Spooled rows of ended processes are recorded first (they know more than a guess)."""
        self.recover()
        groups: dict[tuple[str, str | None], list[NewArtifact]] = {}
        for item in found:
            if item.asset_key is not None and item.path.is_file():
                groups.setdefault((item.asset_key, item.partition), []).append(NewArtifact(
                    item.path, metadata={"repaired": "catalog verify --repair", "inferred": item.note}))
        records = []
        for (key, partition), items in groups.items():
            known = {r["path"] for r in self.query("SELECT DISTINCT path FROM artifacts WHERE asset_key = ?", [key])}
            items = [i for i in items if self.relative(i.path) not in known]  # recorded by the replay above
            if items:
                records += self.record_artifacts(asset_key=key, items=items, partition=partition)
        return records

    def derived_from(self, source: str) -> list[dict[str, Any]]:
        """Everything made, transitively, from ``source``: an asset key or a path (stored form, e.g.
        ``theme/books/1.txt``, or an absolute path outside data_dir)."""
        return self.query(DERIVED_QUERY, [source, self.relative(source)])

    # -- LLM calls -----------------------------------------------------------------------------
    def record_llm_calls(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows as produced by the LLM client (through the spool, like every row). Unknown keys are kept
        in the ``extra`` JSON column rather than dropped. Returns the number of rows written. (The LLM
        resource's clients journal each row the moment it is made instead: :meth:`usage_journal`.)"""
        prepared = [_llm_values(row, index) for index, row in enumerate(rows)]
        if not prepared:
            return 0
        spool = self._spool()
        for values in prepared:
            spool.llm_call(values[0], 0, values)
        self.commit()
        return len(prepared)

    def usage_journal(self) -> Callable[[str, dict[str, Any]], None]:
        """The LLM client's ``usage_journal``: ``("attempt", fields)`` before each provider call and ``("row",
        row)`` for each usage row go to this process's spool at once (the client's batched ``usage_sink``
        then only needs to :meth:`commit`). A row of a request whose process died is made from its attempts
        by :meth:`recover`. Never raises (a bad row is logged and skipped)."""
        spool = self._spool()

        def journal(event: str, fields: dict[str, Any]) -> None:
            try:
                if event == "attempt":
                    spool.attempt(str(fields["request_key"]), {k: fields.get(k) for k in (
                        "provider", "model", "tag", "run_id", "created_at")})
                elif event == "row":
                    values = _llm_values(fields, 0)
                    spool.llm_call(values[0], int(fields.get("attempts") or 0), values)
            except Exception as exc:  # the client must never fail a request for its bookkeeping
                log.warning(f"catalogue spool: LLM usage {event} not journalled: {exc}")

        return journal

    @staticmethod
    def _insert_llm_values(con: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> None:
        names = (*LLM_CALL_COLUMNS, "extra")
        at = LLM_CALL_COLUMNS.index("created_at")
        for values in rows:
            values[at] = _as_timestamp(values[at], "created_at")
        table = pa.table({name: pa.array([values[i] for values in rows], type=_LLM_CALL_ARROW_TYPES[name])
                          for i, name in enumerate(names)})
        # one columnar INSERT from an Arrow table: binding parameters row by row cost ~0.2 ms a row of the
        # interpreter lock, which the LLM client's event loop needs while a batch is in flight
        con.register("_new_llm_calls", table)
        try:
            con.execute(f"INSERT INTO llm_calls ({', '.join(names)}) SELECT {', '.join(names)} FROM _new_llm_calls")
        finally:
            con.unregister("_new_llm_calls")

    # -- provider batches (LLM batch mode) ---------------------------------------------------------
    def record_llm_batch(self, event: str, row: Mapping[str, Any], *, timeout_s: float | None = None) -> int:
        """One ``llm_batches`` row: a batch ``submitted`` (before anything waits on it) or ``ended`` (its counts by
        outcome). Keys other than the columns go to ``extra``. The LLM client's batch ledger
        (``data/llm_cache/batches``) is the record a run resumes from; this row is what the catalogue shows."""
        if not row.get("batch_id"):
            raise ValueError("llm_batches row: field 'batch_id' is missing or empty")
        columns = ("provider", "model", "endpoint", "tag", "run_id", "status", "requests", "succeeded", "errored",
                   "expired", "canceled")
        extra = {k: v for k, v in row.items() if k not in (*columns, "batch_id")}
        values = [row["batch_id"], event, *[row.get(c) for c in columns], _utcnow(), _json(extra or None, "extra")]
        return self._run(lambda con: con.execute(
            f"INSERT INTO llm_batches (batch_id, event, {', '.join(columns)}, created_at, extra) "
            f"VALUES ({', '.join('?' * (len(columns) + 4))}) RETURNING id", values).fetchone()[0], timeout_s=timeout_s)

    # -- training / evaluation runs ------------------------------------------------------------
    def record_run(
        self,
        *,
        kind: str,
        name: str,
        partition: str | None = None,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> int:
        if not kind or not name:
            raise ValueError("record_run: 'kind' and 'name' are required")
        values = [kind, name, partition, run_id, _json(params, "params"), _json(metrics, "metrics"), _utcnow()]
        return self._run(lambda con: con.execute(
            "INSERT INTO runs (kind, name, partition, run_id, params, metrics, created_at) "
            "VALUES (?,?,?,?,?,?,?) RETURNING id", values).fetchone()[0])

    # -- reading -------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run one SQL statement; rows as dicts."""
        def work(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            cursor = con.execute(sql, list(params) if params is not None else None)
            if cursor.description is None:
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return self._run(work)

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A raw connection held under the lock, for bulk reads (keep it short: it blocks writers)."""
        try:
            self._lock.acquire(timeout=lock_timeout_s())
        except Timeout as exc:
            raise CatalogBusy(f"catalogue {self.path} is busy: another process holds its lock file "
                              f"{self._lock.lock_file}; gave up after {lock_timeout_s():.0f}s") from exc
        try:
            con = self._open()
            try:
                yield con
            finally:
                con.close()
        finally:
            self._lock.release()
