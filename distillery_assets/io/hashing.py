"""The one place that hashes: files (streamed, memoised), text, bytes, JSON-able settings (fingerprints) and
derived integer seeds. Nothing else in the project imports :mod:`hashlib`; code that feeds a digest piece by
piece takes :func:`new_sha256`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 1 << 20


def new_sha256(data: bytes = b"") -> "hashlib._Hash":
    """A fresh sha256 digest to feed with ``update`` (for hashes built up from many pieces)."""
    return hashlib.sha256(data)


def iter_blocks(path: str | Path, size: int = BLOCK) -> Iterator[bytes]:
    """A file's bytes in blocks of ``size`` (1 MiB by default), never the whole file in memory."""
    with open(path, "rb") as fh:
        while block := fh.read(size):
            yield block


def sha256_files(*paths: str | Path) -> str:
    """Hex sha256 of the files' bytes read one after another (one file: its plain sha256)."""
    digest = hashlib.sha256()
    for path in paths:
        for block in iter_blocks(path):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    return sha256_files(path)


def sha256_text(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()


def json_fingerprint(body: Any, length: int = 16) -> str:
    """The one fingerprint of settings: sha256 of ``body`` as canonical JSON (sorted keys), first ``length`` hex
    digits. Equal settings give equal fingerprints in every process; finished work is reused by it."""
    return sha256_text(json.dumps(body, sort_keys=True))[:length]


def derived_seed(*parts: object) -> int:
    """A stable non-negative 31-bit seed derived from ``parts`` (joined with ':'), the same in every process."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big") & 0x7FFFFFFF


# In-process memo: (path, inode, size, mtime_ns, ctime_ns, count_lines) -> (sha256, bytes, lines), so a large
# file hashed several times in one step (a base model folder recorded by several artefacts, an encoder's
# weights in every cache key) is read once. An atomic rewrite (new inode) or any edit that changes size or
# timestamps misses the memo.
_MEMO: dict[tuple, tuple[str, int, int | None]] = {}
_MEMO_MAX = 4096


def file_digest(path: str | Path, *, count_lines: bool = False) -> tuple[str, int, int | None]:
    """(hex sha256, size in bytes, line count or None) of a file, memoised per process by its stat."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, count_lines)
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = _read_and_hash(path, count_lines)
    return _MEMO[key]


def sha256_file_cached(path: str | Path) -> str:
    """:func:`sha256_file` through the per-process memo of :func:`file_digest`."""
    return file_digest(path)[0]


def _read_and_hash(path: Path, count_lines: bool) -> tuple[str, int, int | None]:
    digest = hashlib.sha256()
    size = 0
    lines = 0
    last = b"\n"
    for chunk in iter_blocks(path):
        digest.update(chunk)
        size += len(chunk)
        if count_lines:
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if count_lines and size and last != b"\n":
        lines += 1  # final record without a trailing newline
    return digest.hexdigest(), size, (lines if count_lines else None)


class JoinedDigest:
    """sha256 of strings joined by ``sep``, fed one at a time (``"\\n\\n".join`` without building the string)."""

    def __init__(self, sep: str = "\n\n"):
        self._digest, self._sep, self._first = hashlib.sha256(), sep.encode("utf-8"), True

    def add(self, text: str) -> None:
        if not self._first:
            self._digest.update(self._sep)
        self._digest.update(text.encode("utf-8"))
        self._first = False

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
