"""The shipped labels sample with real signal (``data/filters/passage_voice/v1``): 600 passages of the shipped
Gutenberg books, each scored 0-10 on three dimensions that are known functions of its text, so a scorer that
learns them can be checked against the truth, and the default recipe against its ridge baseline.

Passages: the theme pipeline's chunker (:mod:`distillery_assets.theme.chunking`) over the six shipped books
(``data/inputs/gutenberg``) with chunks of at most 480 characters, no overlap, none under 240; shuffled with
``random.Random(25)``; the first 600. Scores (whole numbers, as an oracle answers):

* ``dialogue``: the share of the passage's characters inside double quotation marks (straight or curly),
  x 25, rounded, capped at 10 (a passage 40% quoted speech or more scores 10);
* ``first_person_singular``: ``I``, ``me``, ``my``, ``mine``, ``myself`` per 100 words, rounded, capped at 10;
* ``first_person_plural``: ``we``, ``us``, ``our``, ``ours``, ``ourselves``, 2 points each, capped at 10.

Saturating counts and shares: a linear probe on sentence vectors captures part of them, a small MLP more.

    python -m tests.support.filters_sample            # rewrites articles.jsonl and labels.jsonl of the sample
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from distillery_assets.paths import repo_root

BOOKS = repo_root() / "data" / "inputs" / "gutenberg"
SAMPLE = repo_root() / "data" / "filters" / "passage_voice" / "v1"
DIMS = ("dialogue", "first_person_singular", "first_person_plural")
N_PASSAGES, SEED, CHUNK, MIN_CHUNK = 600, 25, 480, 240

_WORD = re.compile(r"[A-Za-z']+")
_QUOTED = re.compile(r'["\u201c]([^"\u201d]*)["\u201d]')
SINGULAR = frozenset({"i", "me", "my", "mine", "myself"})
PLURAL = frozenset({"we", "us", "our", "ours", "ourselves"})


def passages(n: int = N_PASSAGES, seed: int = SEED) -> list[dict]:
    """The sample's passages as chunk records (``chunk_id``, ``source_title``, ``text``...)."""
    from distillery_assets.theme import books, chunking

    ids = sorted(int(p.stem[2:]) for p in BOOKS.glob("pg*.txt") if p.stem[2:].isdigit())
    batch = books.from_local_dir(BOOKS, books.BookSelection(categories={"all": ids}))
    params = chunking.ChunkParams(chunk_size=CHUNK, overlap=0, min_chunk_size=MIN_CHUNK)
    chunks = [c for record in batch.records for c in chunking.chunk_book(record, params)]
    random.Random(seed).shuffle(chunks)
    return chunks[:n]


def scores(text: str) -> dict[str, int]:
    """The three scores of one passage (see the module docstring)."""
    words = [w.lower() for w in _WORD.findall(text)]
    quoted = sum(len(q) for q in _QUOTED.findall(text)) / max(1, len(text))
    singular = 100 * sum(w in SINGULAR for w in words) / max(1, len(words))
    plural = sum(w in PLURAL for w in words)
    return {"dialogue": min(10, round(25 * quoted)), "first_person_singular": min(10, round(singular)),
            "first_person_plural": min(10, 2 * plural)}


def sample_rows(chunks: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """(articles, labels): a JSONL source's documents and the labels file's lines, in the same order."""
    articles = [{"id": c["chunk_id"], "title": c["source_title"], "content": c["text"], "url": "",
                 "source": "gutenberg", "published_date": ""} for c in chunks]
    labels = [{"id": a["id"], "scores": scores(a["content"])} for a in articles]
    return articles, labels


def write_sample(folder: Path = SAMPLE) -> dict[Path, int]:
    """Write ``articles.jsonl`` and ``labels.jsonl`` (each atomically): {path: lines}."""
    from distillery_assets.io import atomic_write_jsonl

    articles, labels = sample_rows(passages())
    return {folder / name: atomic_write_jsonl(folder / name, rows)
            for name, rows in (("articles.jsonl", articles), ("labels.jsonl", labels))}


if __name__ == "__main__":
    for path, lines in write_sample(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE).items():
        print(path, lines, "lines")
