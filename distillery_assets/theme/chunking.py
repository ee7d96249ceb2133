"""Paragraph chunking of a book with stable chunk ids ``<book id>-<index>``.

Paragraphs (split on blank lines) are packed into chunks of at most ``chunk_size`` characters, joined by a
blank line; a paragraph longer than a whole chunk is cut at word boundaries. Each chunk after the first
starts with the last ``overlap`` characters of the one before (cut at a word boundary), so a sentence that
straddles a border is seen whole at least once. Chunks shorter than ``min_chunk_size`` are dropped.
The index counts every chunk made, dropped ones included, so ids do not shift when the minimum changes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_PARA_SPLIT = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class ChunkParams:
    chunk_size: int = 1024
    overlap: int = 128
    min_chunk_size: int = 256

    def __post_init__(self):
        if self.chunk_size <= 0 or not 0 <= self.overlap < self.chunk_size or self.min_chunk_size < 0:
            raise ValueError(f"bad chunk parameters {self}: need chunk_size > overlap >= 0, min >= 0")


def _split_long(paragraph: str, size: int) -> list[str]:
    pieces, rest = [], paragraph
    while len(rest) > size:
        cut = rest.rfind(" ", 0, size + 1)
        cut = cut if cut > size // 2 else size
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0 or len(text) <= overlap:
        return "" if overlap <= 0 else text
    tail = text[-overlap:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail


def paragraphs(text: str, params: ChunkParams) -> list[str]:
    out: list[str] = []
    for para in _PARA_SPLIT.split(text):
        para = para.strip()
        if para:
            out.extend(_split_long(para, params.chunk_size))
    return out


def chunk_text(text: str, params: ChunkParams = ChunkParams()) -> Iterator[tuple[int, str]]:
    """Yield ``(index, chunk_text)`` for the chunks that meet the minimum size."""
    index = 0
    current: list[str] = []
    size = 0
    for para in paragraphs(text, params):
        added = len(para) + (2 if current else 0)
        if current and size + added > params.chunk_size:
            chunk = "\n\n".join(current)
            if len(chunk) >= params.min_chunk_size:
                yield index, chunk
            index += 1
            tail = _tail(chunk, params.overlap)
            current, size = ([tail], len(tail)) if tail else ([], 0)
            added = len(para) + (2 if current else 0)
            if current and size + added > params.chunk_size:  # overlap would not leave room: drop it
                current, size, added = [], 0, len(para)
        current.append(para)
        size += added
    if current:
        chunk = "\n\n".join(current)
        if len(chunk) >= params.min_chunk_size:
            yield index, chunk


def chunk_book(book: dict[str, Any], params: ChunkParams = ChunkParams()) -> Iterator[dict[str, Any]]:
    """Chunk records of one book record (``id``, ``title``, ``author``, ``text``)."""
    for index, text in chunk_text(book["text"], params):
        yield {
            "chunk_id": f"{book['id']}-{index}",
            "source_id": book["id"],
            "source_title": book.get("title", ""),
            "source_author": book.get("author", ""),
            "index": index,
            "text": text,
            "length": len(text),
        }


def chunk_books(books: Iterable[dict[str, Any]], params: ChunkParams = ChunkParams(),
                per_book: Counter | None = None) -> Iterator[dict[str, Any]]:
    """Chunk records of every book in turn, streamed; ``per_book`` (when given) counts chunks per book id."""
    for book in books:
        for chunk in chunk_book(book, params):
            if per_book is not None:
                per_book[book["id"]] += 1
            yield chunk
