"""Fingerprints of artefacts: sha256, size and record count of a file, or of a whole directory.

A directory (a LoRA adapter, a tokenizer folder) is hashed as the sha256 of its sorted manifest: one line
``<relative posix path>\\t<file sha256>`` per file, so renaming or editing any file inside changes the hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillery_assets.io.hashing import file_digest, new_sha256

RECORD_SUFFIXES = (".jsonl",)


@dataclass(frozen=True)
class Fingerprint:
    kind: str  # "file" | "dir"
    sha256: str
    bytes: int
    files: int
    record_count: int | None  # lines of a .jsonl file; None otherwise


def fingerprint(path: Path) -> Fingerprint:
    """Hash a file or directory. Raises FileNotFoundError naming the path if it is missing."""
    path = Path(path)
    if path.is_file():
        sha, size, records = file_digest(path, count_lines=path.suffix in RECORD_SUFFIXES)
        return Fingerprint("file", sha, size, 1, records)
    if path.is_dir():
        manifest = new_sha256()
        total = 0
        count = 0
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            sha, size, _ = file_digest(child)
            manifest.update(f"{child.relative_to(path).as_posix()}\t{sha}\n".encode())
            total += size
            count += 1
        return Fingerprint("dir", manifest.hexdigest(), total, count, None)
    raise FileNotFoundError(f"artefact path does not exist: {path}")
