"""``Catalog``: the DuckDB catalogue of artefacts, LLM calls and training runs.

DuckDB lets one process hold a database file for writing at a time, and Dagster's multiprocess
executor runs every step in its own process. So every operation here opens its own connection inside
an exclusive file lock on ``<db>.lock``, does its work in one transaction and closes the connection
before the lock is released. A DuckDB lock error (a process outside this class holding the file, such
as an interactive ``duckdb`` shell) is retried with backoff; after that the error says which file.

``Catalog(path, read_only=True)`` (what the read commands of the CLI use) opens the file read-only: it
creates nothing, migrates nothing and leaves the file's bytes as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from filelock import FileLock, Timeout
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from distillery_assets.catalog.hashing import Fingerprint, fingerprint
from distillery_assets.catalog.schema import DERIVED_QUERY, LINEAGE_QUERY, SOURCES_QUERY, TABLES, VIEWS
from distillery_assets.catalog.sources import SOURCE_PREFIX, default_roots, source_key, visible_files
from distillery_assets.paths import data_dir

# (database path, inode) pairs whose schema this process has already created or checked.
_SCHEMA_READY: set[tuple[str, int]] = set()

LOCK_TIMEOUT_S = float(os.environ.get("DISTILLERY_CATALOG_LOCK_TIMEOUT_S", "300"))

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


class Catalog:
    """One DuckDB file; safe to use from many processes at once (see module docstring)."""

    def __init__(self, path: Path | str | None = None, *, root: Path | str | None = None,
                 sources: Mapping[str, Path | str] | None = None, read_only: bool = False):
        self.path = Path(path) if path is not None else data_dir() / "catalog.duckdb"
        self.root = Path(root).resolve() if root is not None else data_dir()
        # label -> folder of edited files (default: inputs_dir() and config_dir()); see catalog.sources
        self.sources = {k: Path(v).resolve() for k, v in (sources or default_roots()).items()}
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    # -- connections ---------------------------------------------------------------------------
    @retry(
        retry=retry_if_exception(_is_duckdb_lock_error),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        stop=stop_after_attempt(30),
        reraise=True,
    )
    def _run(self, work):
        """Run ``work(connection)`` in one transaction under the file lock; return its result."""
        try:
            with self._lock:
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
        except Timeout as exc:
            raise CatalogError(f"catalogue {self.path}: lock {self._lock.lock_file} busy for "
                               f"{LOCK_TIMEOUT_S:.0f}s") from exc
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
        if not asset_key:
            raise ValueError("record_artifacts: asset_key is required")
        memo: dict[tuple[str, str | None, str | None], list[_Edge]] = {}
        prepared = []
        for item in items:
            abs_path = self.absolute(self.relative(item.path))
            fp = item.fingerprint or fingerprint(abs_path)
            count = item.record_count if item.record_count is not None else fp.record_count
            prepared.append((self.relative(abs_path), fp, count, self._edges(item.inputs, memo),
                             _json(dict(item.metadata) if item.metadata else None, "metadata")))

        def work(con: duckdb.DuckDBPyConnection) -> list[ArtifactRecord]:
            return [self._insert_artifact(con, asset_key, partition, run_id, *row) for row in prepared]

        return self._run(work)

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

    def verify(self, asset_key: str | None = None) -> list[dict[str, Any]]:
        """Re-hash the newest artefact of every (asset, partition) -- or of one asset -- and compare with
        the catalogue. Each row: asset_key, partition, path, status ("ok" | "missing" | "changed").
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
                           "status": status})
        return report

    def derived_from(self, source: str) -> list[dict[str, Any]]:
        """Everything made, transitively, from ``source``: an asset key or a path (stored form, e.g.
        ``theme/books/1.txt``, or an absolute path outside data_dir)."""
        return self.query(DERIVED_QUERY, [source, self.relative(source)])

    # -- LLM calls -----------------------------------------------------------------------------
    def record_llm_calls(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows as produced by the LLM client. Unknown keys are kept in the ``extra`` JSON
        column rather than dropped. Returns the number of rows written."""
        prepared = []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"llm_calls row {index}: expected a mapping, got {type(row).__name__}")
            if not row.get("request_key"):
                raise ValueError(f"llm_calls row {index}: field 'request_key' is missing or empty")
            values = [row.get(col) for col in LLM_CALL_COLUMNS]
            values[LLM_CALL_COLUMNS.index("created_at")] = _as_timestamp(row.get("created_at"), "created_at")
            extra = {k: v for k, v in row.items() if k not in LLM_CALL_COLUMNS}
            prepared.append([*values, _json(extra or None, "extra")])
        if not prepared:
            return 0
        names = (*LLM_CALL_COLUMNS, "extra")
        types = _LLM_CALL_ARROW_TYPES
        table = pa.table({name: pa.array([values[i] for values in prepared], type=types[name])
                          for i, name in enumerate(names)})

        def insert(con) -> None:
            # one columnar INSERT from an Arrow table: binding parameters row by row cost ~0.2 ms a row of
            # the interpreter lock, which the LLM client's event loop needs while a batch is in flight
            con.register("_new_llm_calls", table)
            try:
                con.execute(f"INSERT INTO llm_calls ({', '.join(names)}) SELECT {', '.join(names)} FROM _new_llm_calls")
            finally:
                con.unregister("_new_llm_calls")

        self._run(insert)
        return len(prepared)

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
        with self._lock:
            con = self._open()
            try:
                yield con
            finally:
                con.close()
