"""Split a Project Gutenberg poetry collection into single poems.

Used once to build the shipped sample under ``data/inputs/poetry/good/`` (see its README) and kept so the
sample can be rebuilt or extended. It understands the layout of Gutenberg #12242 (Dickinson, *Poems: Three
Series*): poems headed by a Roman numeral line (``XIV.``), optionally followed by an upper-case title, and
separated by runs of blank lines. Editorial notes in square brackets are dropped.

    python -m distillery_assets.poetry.gutenberg /path/pg12242.txt OUT_DIR --limit 30
    python -m distillery_assets.poetry.gutenberg /path/pg12242.txt data/inputs/poetry/verse --limit 60 \
        --max-lines 12 --exclude data/inputs/poetry/good     # the poet's verse, none of the good poems
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

_START = re.compile(r"\*\*\*\s*START OF TH(E|IS) PROJECT GUTENBERG", re.I)
_END = re.compile(r"\*\*\*\s*END OF TH(E|IS) PROJECT GUTENBERG", re.I)
_NUMERAL = re.compile(r"^[IVXLC]+\.\s*$")
_SECTION = re.compile(r"^[IVXLC]+\.\s+[A-Z][A-Z ,']+\.?\s*$")  # "I. LIFE." -- a section header, not a poem
_TITLE = re.compile(r"^[A-Z][A-Z0-9 ,;:'\-!?]+\.?\s*$")


@dataclass(frozen=True)
class SplitPoem:
    number: int  # order in the book, 1-based
    title: str | None
    text: str


def gutenberg_body(raw: str) -> str:
    """The text between the START and END markers (whole text when a marker is missing)."""
    text = raw.lstrip("\ufeff").replace("\r\n", "\n")
    start, end = _START.search(text), _END.search(text)
    begin = text.find("\n", start.end()) + 1 if start else 0
    return text[begin : end.start() if end else len(text)]


def _clean(block: list[str]) -> tuple[str | None, str]:
    lines = [line.rstrip() for line in block]
    while lines and not lines[0].strip():
        lines.pop(0)
    title = None
    if lines and _TITLE.match(lines[0].strip()) and len(lines[0].strip()) < 60:
        title = lines.pop(0).strip().rstrip(".").title()
    text = "\n".join(lines)
    text = re.sub(r"\[[^\]]*\]", "", text)  # editorial notes
    text = re.sub(r"_([^_]+)_", r"\1", text)  # Gutenberg italics
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    # drop the common indentation Gutenberg uses for some poems
    body = text.split("\n")
    indents = [len(x) - len(x.lstrip()) for x in body if x.strip()]
    cut = min(indents) if indents else 0
    return title, "\n".join(x[cut:] for x in body).strip()


def split_numbered_poems(raw: str) -> list[SplitPoem]:
    """Poems headed by Roman numerals, in book order."""
    poems: list[SplitPoem] = []
    current: list[str] | None = None
    for line in gutenberg_body(raw).split("\n"):
        stripped = line.strip()
        if _NUMERAL.match(stripped) or _SECTION.match(stripped):
            if current is not None:
                title, text = _clean(current)
                if text:
                    poems.append(SplitPoem(len(poems) + 1, title, text))
            current = [] if _NUMERAL.match(stripped) else None
            continue
        if current is not None:
            current.append(line)
    if current is not None:
        title, text = _clean(current)
        if text:
            poems.append(SplitPoem(len(poems) + 1, title, text))
    return poems


def pick_short(poems: list[SplitPoem], *, limit: int, max_lines: int = 16, min_lines: int = 4) -> list[SplitPoem]:
    """Short poems only (they fit a small model's context), first ``limit`` in book order."""
    chosen = [p for p in poems if min_lines <= len([x for x in p.text.split("\n") if x.strip()]) <= max_lines]
    return chosen[:limit]


def main(argv: list[str] | None = None) -> int:
    from distillery_assets.io import atomic_write_text
    from distillery_assets.paths import safe_child

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("book", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--prefix", default="dickinson")
    parser.add_argument("--max-lines", type=int, default=16, help="longest poem kept, in non-empty lines")
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="skip poems already written (same file name) in this folder; repeatable")
    args = parser.parse_args(argv)
    taken = {f.name for folder in args.exclude for f in folder.glob("*.txt")}
    poems = [p for p in pick_short(split_numbered_poems(args.book.read_text(encoding="utf-8")), limit=10**9,
                                   max_lines=args.max_lines) if f"{args.prefix}_{p.number:03d}.txt" not in taken]
    poems = poems[: args.limit]
    for poem in poems:
        name = f"{args.prefix}_{poem.number:03d}.txt"
        atomic_write_text(safe_child(args.out_dir, name, source=str(args.book)), poem.text + "\n")
    print(f"wrote {len(poems)} poems to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
