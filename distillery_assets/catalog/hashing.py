"""Fingerprints of artefacts: sha256, size and record count of a file, or of a whole directory.

A directory (a LoRA adapter, a tokenizer folder) is hashed as the sha256 of its sorted manifest: one line
``<relative posix path>\\t<file sha256>`` per file, so renaming or editing any file inside changes the hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from distillery_assets.io.hashing import iter_blocks

RECORD_SUFFIXES = (".jsonl",)
# In-process memo: (path, inode, size, mtime_ns, ctime_ns, count_lines) -> result, so a large input (a
# base model folder) recorded by several artefacts of one step is read once. An atomic rewrite (new inode)
# or any edit that changes size or timestamps misses the memo.
_MEMO: dict[tuple, tuple[str, int, int | None]] = {}
_MEMO_MAX = 4096


@dataclass(frozen=True)
class Fingerprint:
    kind: str  # "file" | "dir"
    sha256: str
    bytes: int
    files: int
    record_count: int | None  # lines of a .jsonl file; None otherwise


def _hash_file(path: Path, count_lines: bool) -> tuple[str, int, int | None]:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, count_lines)
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = _read_and_hash(path, count_lines)
    return _MEMO[key]


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


def fingerprint(path: Path) -> Fingerprint:
    """Hash a file or directory. Raises FileNotFoundError naming the path if it is missing."""
    path = Path(path)
    if path.is_file():
        sha, size, records = _hash_file(path, path.suffix in RECORD_SUFFIXES)
        return Fingerprint("file", sha, size, 1, records)
    if path.is_dir():
        manifest = hashlib.sha256()
        total = 0
        count = 0
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            sha, size, _ = _hash_file(child, False)
            manifest.update(f"{child.relative_to(path).as_posix()}\t{sha}\n".encode())
            total += size
            count += 1
        return Fingerprint("dir", manifest.hexdigest(), total, count, None)
    raise FileNotFoundError(f"artefact path does not exist: {path}")
