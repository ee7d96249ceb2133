"""The catalogue's write-ahead spool: a row is on disk the moment its file is written or its LLM call made.

Every row a process means to put into the catalogue (an artefact, an LLM usage row) is first appended as one
JSON line to that process's spool file, ``<db stem>.spool/<pid>-<token>-<n>.jsonl`` beside the catalogue
(``data/catalog.spool/``), and only then inserted into DuckDB, in batches. A line is one ``os.write`` to a file
only its process appends to, so a kill -9 at any moment leaves every line written before it (a half-written
last line is ignored). Lines are not fsynced one by one (the corpus writes its files the same way and
flushes them together); :meth:`Spool.sync` flushes a spool that is left behind.

Besides rows, the LLM client journals each provider call *before* it is sent (an ``attempt`` line). The row
of the request names the attempts it accounts for (``closes``); an attempt nobody closed belongs to a
request that was in flight when its process died: the replay records it as an ``interrupted`` usage row,
so every call the provider received has its row.

The owner holds an exclusive ``flock`` on its file for as long as the file exists, so a file whose lock can
be taken belongs to a process that has ended: whoever opens the catalogue for writing next replays it (see
``Catalog.recover``), skipping the lines already committed (their ids are in the table ``spool_applied``,
written in the same transaction as the rows), and deletes it. A file whose rows are all committed and whose
attempts are all closed is deleted by its owner; the next row starts a new one.

No Dagster here; POSIX only (``fcntl.flock``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillery_assets.io.jsonl import JsonlError, iter_jsonl_lines

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
CREATING = ".creating-"  # a spool file being created (not yet locked): never replayed


def spool_dir_for(db_path: Path) -> Path:
    """``data/catalog.duckdb`` -> ``data/catalog.spool``."""
    return Path(db_path).with_suffix(".spool")


class Spool:
    """One process's spool for one catalogue (get it with :func:`spool_for`). Thread-safe: the LLM client's
    event loop appends while a step's thread commits."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.pid = os.getpid()
        self.token = uuid.uuid4().hex[:12]
        self.drain_lock = threading.RLock()  # one commit at a time in this process (held across the transaction)
        self._lock = threading.Lock()  # appends and the in-memory state below
        self._fd: int | None = None
        self._path: Path | None = None
        self._files = 0
        self._seq = 0
        self._pending: dict[str, dict[str, Any]] = {}  # id -> entry, rows appended and not yet committed
        self._open: dict[str, list[str]] = {}  # request key -> ids of attempts sent whose row has not come yet
        self._warned = False
        self.results: dict[str, Any] = {}  # id -> what committing an artefact entry returned (popped by callers)

    # -- the owner's side -------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        """The current spool file (None when everything is committed and the file was removed)."""
        return self._path

    def append(self, entry: dict[str, Any], *, pending: bool = True) -> str:
        """Write ``entry`` (a JSON object with a ``kind``) as one line; return its id. ``pending``: a row to
        commit (an attempt line is not: it is closed by its request's row)."""
        with self._lock:
            return self._append(entry, pending)

    def _append(self, entry: dict[str, Any], pending: bool) -> str:
        self._seq += 1
        entry = {"id": f"{self.token}-{self._seq}", **entry}
        line = (json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode()
        try:
            fd = self._file()
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:  # a full disk must not stop the run: the row is still committed from memory
            if not self._warned:
                self._warned = True
                log.warning(f"catalogue spool {self.directory}: could not write ({exc}); rows are kept in memory "
                            "until committed, and would be lost if this process were killed first")
        if pending:
            self._pending[entry["id"]] = entry
        return entry["id"]

    def attempt(self, request_key: str, fields: dict[str, Any]) -> None:
        """An LLM provider call about to be sent for ``request_key`` (``fields``: provider, model, tag, run_id)."""
        with self._lock:
            marker = self._append({"kind": "attempt", "request_key": request_key, **fields}, pending=False)
            self._open.setdefault(request_key, []).append(marker)

    def llm_call(self, request_key: str, attempts: int, values: list[Any]) -> str:
        """A usage row (``values`` in the column order of ``llm_calls``), closing up to ``attempts`` attempts
        of the same request key sent by this process."""
        with self._lock:
            open_ = self._open.get(request_key, [])
            closes, rest = open_[:max(attempts, 0)], open_[max(attempts, 0):]
            if rest:
                self._open[request_key] = rest
            else:
                self._open.pop(request_key, None)
            return self._append({"kind": "llm_call", "values": values, "closes": closes}, pending=True)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pending.values())

    def committed(self, ids: list[str]) -> None:
        """These entries are in the catalogue; once nothing is pending and no attempt is open, the file goes."""
        with self._lock:
            for entry_id in ids:
                self._pending.pop(entry_id, None)
            if not self._pending and not self._open and self._fd is not None:
                self._drop_file()

    def sync(self) -> None:
        """fsync the spool file (rows left behind for a later process survive a power loss too)."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                except OSError:
                    pass

    def _file(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._files += 1
            name = f"{self.pid}-{self.token}-{self._files}{SUFFIX}"
            creating = self.directory / f"{CREATING}{name}"
            fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # ours alone until the file is gone (the lock dies with us)
                os.rename(creating, self.directory / name)
            except BaseException:
                os.close(fd)
                creating.unlink(missing_ok=True)
                raise
            self._fd, self._path = fd, self.directory / name
        return self._fd

    def _drop_file(self) -> None:
        assert self._fd is not None and self._path is not None
        self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd, self._path = None, None

    def _forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptor (the parent keeps its lock and its file)."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._path = None, None


_SPOOLS: dict[str, Spool] = {}
_SPOOLS_LOCK = threading.Lock()


def spool_for(directory: Path) -> Spool:
    """This process's spool in ``directory`` (one per process and folder, shared by every Catalog object)."""
    key = str(Path(directory).resolve())
    with _SPOOLS_LOCK:
        spool = _SPOOLS.get(key)
        if spool is None or spool.pid != os.getpid():
            spool = _SPOOLS[key] = Spool(Path(directory))
        return spool


def _after_fork_in_child() -> None:
    for spool in _SPOOLS.values():
        spool._forget_after_fork()
    _SPOOLS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the replay side ----------------------------------------------------------------------------------
class DeadSpool:
    """A spool file whose owner has ended, locked by this process while its lines are replayed."""

    def __init__(self, path: Path, fd: int, entries: list[dict[str, Any]]):
        self.path, self._fd, self.entries = path, fd, entries

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def spool_files(directory: Path) -> list[Path]:
    """Every spool file in ``directory`` (live or dead, not one being created)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))


def any_dead(directory: Path) -> bool:
    """Whether ``directory`` holds a spool file of an ended process (a cheap look before every write)."""
    for path in spool_files(directory):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            continue
        finally:
            os.close(fd)
    return False


def dead_spools(directory: Path, *, skip: Path | None = None) -> Iterator[DeadSpool]:
    """The spool files of ended processes, each locked (release or remove every one yielded)."""
    for path in spool_files(directory):
        if skip is not None and path == skip:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # committed and removed by its owner since the listing
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its owner is alive
            os.close(fd)
            continue
        try:
            yield DeadSpool(path, fd, _read(path, fd))
        except BaseException:
            os.close(fd)
            raise


def read_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of any spool file, live or dead, without locking it (a line being written is left out)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        return _read(path, fd)
    finally:
        os.close(fd)


def _read(path: Path, fd: int) -> list[dict[str, Any]]:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    lines = b"".join(chunks).split(b"\n")
    entries = []
    for number, value in iter_jsonl_lines(lines, path, on_error="yield"):
        if isinstance(value, JsonlError):
            if number < len(lines):  # not the last line: a kill can only cut the line being written
                log.warning(f"catalogue spool: skipping {value}")
            continue
        if isinstance(value.get("id"), str) and value.get("kind") in ("artifact", "llm_call", "attempt"):
            entries.append(value)
    return entries


def unclosed_attempts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attempt lines that no usage row among ``entries`` closes: calls in flight when their process died."""
    closed = {marker for e in entries if e["kind"] == "llm_call" for marker in e.get("closes") or ()}
    seen: set[str] = set()
    out = []
    for entry in entries:
        if entry["kind"] == "attempt" and entry["id"] not in closed and entry["id"] not in seen:
            seen.add(entry["id"])
            out.append(entry)
    return out
