"""The one sha256 helper for files and text, and the one streaming block reader behind it (the catalogue's
fingerprints read files through :func:`iter_blocks` too)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 1 << 20


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


def sha256_joined(texts, sep: str = "\n\n") -> str:
    """Hex sha256 of ``sep.join(texts)``, streamed: equal to ``sha256_text(sep.join(texts))``."""
    digest = JoinedDigest(sep)
    for text in texts:
        digest.add(text)
    return digest.hexdigest()
