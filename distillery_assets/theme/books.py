"""Project Gutenberg books: read, check, strip the licence wrapper, date, de-duplicate.

Three sources give the same record shape ``{id, title, author, text, length, pub_year, method}``:

* ``local``  a directory of ``pg<id>.txt`` files with a ``manifest.jsonl`` (the offline default: the
  sample shipped under ``data/inputs/gutenberg``);
* ``hf``     the Hugging Face dataset ``manu/project_gutenberg`` (split ``en``), streamed;
* ``mirror`` a Gutenberg mirror base URL, trying the usual file layouts.

A book that cannot be used (empty, binary, not UTF-8, too recent, missing) becomes a :class:`BookReject`
with a reason that names it; the other books still go through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery_assets.io import JsonlError, iter_jsonl
from distillery_assets.paths import inputs_dir, safe_child

SOURCES = ("local", "hf", "mirror")
HF_DATASET = "manu/project_gutenberg"
MIRROR_LAYOUTS = ("cache/epub/{id}/pg{id}.txt", "files/{id}/{id}-0.txt", "files/{id}/{id}.txt")

# "*** START OF THE PROJECT GUTENBERG EBOOK X ***" and the older "THIS" form; some files omit the space
# after "***" and some wrap the title onto the next line, so the closing "***" may come later.
_START = re.compile(r"\*\*\*\s*START OF (?:THIS|THE) PROJECT GUTENBERG E-?BOOK\b[^*]{0,400}(?:\*\*\*)?", re.I)
_END = re.compile(r"^[^\n]*?\*\*\*\s*END OF (?:THIS|THE) PROJECT GUTENBERG E-?BOOK", re.I | re.M)
# Master files without markers end with "End of Project Gutenberg's <title>" or "End of the Project ...".
_LEGACY_END = re.compile(r"^\s*End of (?:the )?Project Gutenberg'?s?\b", re.I | re.M)
_CREDIT = re.compile(r"\s*(?:Produced by|E-text prepared by|Transcribed (?:by|from)|This e-?text was prepared by)\b", re.I)
_YEAR = re.compile(
    r"(?:copyright|published|first edition|first printed|printed)\b[^0-9\n]{0,25}(1[4-9]\d\d|20\d\d)", re.I
)
_HEADER_FIELD = re.compile(r"^(Title|Author):\s*(.+)$", re.M)


class BookError(ValueError):
    """A book file or record that cannot be used; the message names it."""


@dataclass(frozen=True)
class BookReject:
    source: str  # file path, URL or dataset row
    book_id: int | None
    reason: str


@dataclass(frozen=True)
class BookSelection:
    """Which ebooks to take: ids grouped by category, the publication cutoff, the authors known to be old."""

    categories: dict[str, list[int]]
    max_year: int = 1969
    known_authors: frozenset[str] = field(default_factory=frozenset)

    @property
    def ids(self) -> list[int]:
        seen: dict[int, None] = {}
        for ids in self.categories.values():
            for book_id in ids:
                seen.setdefault(int(book_id), None)
        return list(seen)

    def category_of(self, book_id: int) -> str | None:
        return next((name for name, ids in self.categories.items() if book_id in ids), None)


def load_selection(path: Path) -> BookSelection:
    """Read ``books.json``: ``{"max_year": 1969, "known_authors": [...], "categories": {name: [ids]}}``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BookError(f"{path}: cannot read book selection: {exc}") from exc
    categories = raw.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise BookError(f"{path}: field 'categories' must be a non-empty object of name -> [ebook ids]")
    for name, ids in categories.items():
        if not isinstance(ids, list) or not all(isinstance(i, int) and i > 0 for i in ids):
            raise BookError(f"{path}: categories.{name} must be a list of positive integer ebook ids")
    return BookSelection(
        categories={k: list(v) for k, v in categories.items()},
        max_year=int(raw.get("max_year", 1969)),
        known_authors=frozenset(a.lower() for a in raw.get("known_authors", [])),
    )


# ---------------------------------------------------------------------------------------------- text


def decode_book(data: bytes, source: str) -> str:
    """Bytes of a book file -> text with BOM removed and LF line endings; raises :class:`BookError`."""
    if not data.strip():
        raise BookError(f"{source}: empty file")
    if b"\x00" in data[:65536]:
        raise BookError(f"{source}: binary file (NUL bytes), not a plain-text book")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BookError(f"{source}: not UTF-8 (invalid byte at offset {exc.start})") from exc
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BookError(f"{source}: empty file")
    return text


@dataclass(frozen=True)
class Stripped:
    text: str
    header: str
    warning: str | None


def strip_gutenberg(text: str) -> Stripped:
    """Remove the Project Gutenberg header and licence footer.

    A text with no markers at all is returned whole, with a warning.
    """
    start = _START.search(text)
    warning = None
    if start:
        line_end = text.find("\n", start.end())
        body_start = len(text) if line_end < 0 else line_end + 1
        header = text[: start.start()]
    else:
        body_start, header = 0, ""
    end = _END.search(text, body_start) or _LEGACY_END.search(text, body_start)
    body_end = end.start() if end else len(text)
    if not start and not end:
        warning = "no Project Gutenberg START/END markers; kept the whole text"
    elif not start:
        warning = "no START marker; kept everything before the footer"
    elif not end:
        warning = "no END marker; kept everything after the header"
    body = text[body_start:body_end].strip()
    # older files also close with "End of the Project Gutenberg EBook of ..." just before the END marker,
    # and open with a transcriber's credit paragraph ("Produced by ...")
    tail = _LEGACY_END.search(body, max(0, len(body) - 600))
    if tail:
        body = body[: tail.start()].rstrip()
    first, sep, rest = body.partition("\n\n")
    if _CREDIT.match(first) and rest.strip():
        body = rest.strip()
    return Stripped(text=body, header=header, warning=warning)


def header_fields(header: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2).strip() for m in _HEADER_FIELD.finditer(header)}


def find_pub_year(body: str, title: str = "") -> int | None:
    """Earliest plausible publication year stated near the start of the book (copyright/published lines),
    else a year in the title; ``None`` when the text does not say."""
    years = [int(m.group(1)) for m in _YEAR.finditer(body[:8000])]
    if years:
        return min(years)
    in_title = re.findall(r"\b(1[4-9]\d\d)\b", title)
    return int(in_title[0]) if in_title else None


def temporal_verdict(pub_year: int | None, author: str, selection: BookSelection) -> tuple[bool, str | None]:
    """The seed's cutoff rule: reject when published in or after ``max_year``; accept known authors; accept
    unknown ones with a warning."""
    if pub_year is not None and pub_year >= selection.max_year:
        return False, f"published {pub_year}, not before the {selection.max_year} cutoff"
    if pub_year is not None or any(a.strip().lower() in selection.known_authors for a in author.split(";")):
        return True, None
    return True, f"publication year unknown and author {author!r} not in known_authors; kept"


def make_record(
    book_id: int, raw_text: str, method: str, selection: BookSelection, title: str = "", author: str = ""
) -> tuple[dict[str, Any] | None, list[str], str | None]:
    """Build the book record; returns ``(record or None, warnings, reject reason or None)``."""
    stripped = strip_gutenberg(raw_text)
    warnings = [stripped.warning] if stripped.warning else []
    fields = header_fields(stripped.header or raw_text[:3000])
    title = title or fields.get("title", "")
    author = author or fields.get("author", "")
    if not stripped.text.strip():
        return None, warnings, "no text left after removing the Gutenberg header and footer"
    pub_year = find_pub_year(stripped.text, title)
    ok, note = temporal_verdict(pub_year, author, selection)
    if not ok:
        return None, warnings, note
    if note:
        warnings.append(note)
    record = {
        "id": int(book_id),
        "title": title,
        "author": author,
        "text": stripped.text,
        "length": len(stripped.text),
        "pub_year": pub_year,
        "method": method,
        "category": selection.category_of(int(book_id)),
    }
    return record, warnings, None


# ------------------------------------------------------------------------------------------- sources


@dataclass
class BookBatch:
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[BookReject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # local files read (for lineage); none for hf / mirror

    def add(self, source: str, book_id: int, raw_text: str, method: str, selection: BookSelection, **meta):
        record, warnings, reason = make_record(book_id, raw_text, method, selection, **meta)
        self.warnings += [f"{source}: {w}" for w in warnings]
        if reason:
            self.rejects.append(BookReject(source, book_id, reason))
        elif record:
            self.records.append(record)


def read_manifest(directory: Path) -> dict[int, dict[str, Any]]:
    """``manifest.jsonl`` beside the books: id -> entry. Bad lines raise errors naming file and line."""
    path = Path(directory) / "manifest.jsonl"
    if not path.exists():
        return {}
    entries: dict[int, dict[str, Any]] = {}
    for line_no, entry in iter_jsonl(path, on_error="raise"):
        if not isinstance(entry.get("id"), int):
            raise JsonlError(path, line_no, "field 'id' must be an integer ebook id")
        entries[entry["id"]] = entry
    return entries


def local_files(directory: Path, selection: BookSelection, ids: Iterable[int] | None = None) -> list[Path]:
    """The files :func:`from_local_dir` reads from ``directory`` for these ids: the manifest (if present) and
    each ``pg<id>.txt`` that exists (what a run's result depends on, for its fingerprint)."""
    directory = Path(directory)
    wanted = list(ids) if ids is not None else selection.ids
    files = [directory / "manifest.jsonl"] if (directory / "manifest.jsonl").exists() else []
    books = (safe_child(directory, f"pg{int(i)}.txt", source=f"book id {i}") for i in wanted)
    return files + [path for path in books if path.exists()]


def local_directory(local_dir: Path | str | None) -> Path:
    """The folder a ``local`` source reads: ``local_dir``, by default ``inputs_dir()/gutenberg``."""
    return Path(local_dir) if local_dir else inputs_dir() / "gutenberg"


def from_local_dir(directory: Path, selection: BookSelection, ids: Iterable[int] | None = None) -> BookBatch:
    """Books ``pg<id>.txt`` from ``directory``; ids default to the selection's ids present in the manifest
    or directory (the rest are reported as missing)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    wanted = list(ids) if ids is not None else selection.ids
    batch = BookBatch()
    if manifest:
        batch.files.append(directory / "manifest.jsonl")
    for book_id in wanted:
        path = safe_child(directory, f"pg{int(book_id)}.txt", source=f"book id {book_id}")
        if not path.exists():
            batch.missing.append(int(book_id))
            continue
        entry = manifest.get(int(book_id), {})
        batch.files.append(path)
        try:
            text = decode_book(path.read_bytes(), str(path))
        except BookError as exc:
            batch.rejects.append(BookReject(str(path), int(book_id), str(exc)))
            continue
        batch.add(str(path), int(book_id), text, "local", selection,
                  title=entry.get("title", ""), author=entry.get("author", ""))
    return batch


def from_rows(rows: Iterable[dict[str, Any]], selection: BookSelection, method: str, source: str,
              ids: Iterable[int] | None = None) -> BookBatch:
    """Books from dataset rows ``{id, text}`` (``id`` may be a string such as ``"624"`` or ``"PG624"``)."""
    wanted = set(int(i) for i in (ids if ids is not None else selection.ids))
    batch, found = BookBatch(), set()
    for row_no, row in enumerate(rows):
        match = re.search(r"\d+", str(row.get("id", "")))
        if not match or int(match.group()) not in wanted or int(match.group()) in found:
            continue
        book_id = int(match.group())
        found.add(book_id)
        text = row.get("text")
        where = f"{source} row {row_no} (id {row.get('id')!r})"
        if not isinstance(text, str) or not text.strip():
            batch.rejects.append(BookReject(where, book_id, f"{where}: empty text"))
            continue
        batch.add(where, book_id, text.replace("\r\n", "\n").removeprefix("\ufeff"), method, selection)
        if found == wanted:
            break
    batch.missing = sorted(wanted - found)
    return batch


def from_hf_dataset(selection: BookSelection, ids: Iterable[int] | None = None, split: str = "en") -> BookBatch:
    """Stream ``manu/project_gutenberg`` (needs the Hub; not reachable offline)."""
    import datasets  # heavy import kept local

    rows = datasets.load_dataset(HF_DATASET, split=split, streaming=True)
    return from_rows(rows, selection, "hf", HF_DATASET, ids)


def from_mirror(base_url: str, selection: BookSelection, ids: Iterable[int] | None = None,
                get: Callable[[str], tuple[int, bytes]] | None = None) -> BookBatch:
    """Fetch ``pg<id>.txt`` from a Gutenberg mirror, trying each known layout in turn."""
    if get is None:
        import httpx

        def get(url: str) -> tuple[int, bytes]:
            response = httpx.get(url, timeout=60, follow_redirects=True)
            return response.status_code, response.content

    batch = BookBatch()
    for book_id in (ids if ids is not None else selection.ids):
        tried = []
        for layout in MIRROR_LAYOUTS:
            url = base_url.rstrip("/") + "/" + layout.format(id=int(book_id))
            status, body = get(url)
            tried.append(f"{url} -> {status}")
            if status == 200:
                try:
                    text = decode_book(body, url)
                except BookError as exc:
                    batch.rejects.append(BookReject(url, int(book_id), str(exc)))
                else:
                    batch.add(url, int(book_id), text, "mirror", selection)
                break
        else:
            batch.missing.append(int(book_id))
            batch.warnings.append(f"book {book_id}: not found on mirror ({'; '.join(tried)})")
    return batch


def load_books(source: str, selection: BookSelection, ids: Iterable[int] | None = None, *,
               local_dir: Path | str | None = None, mirror_url: str | None = None) -> BookBatch:
    """The books of ``selection`` (or just ``ids``) from one of :data:`SOURCES`: ``local`` reads ``local_dir``
    (default ``inputs_dir()/gutenberg``), ``hf`` streams the Hub dataset, ``mirror`` fetches from
    ``mirror_url``. An unknown source or a mirror without a URL raises :class:`BookError`."""
    if source == "local":
        return from_local_dir(local_directory(local_dir), selection, ids)
    if source == "hf":
        return from_hf_dataset(selection, ids)
    if source == "mirror":
        if not mirror_url:
            raise BookError("source 'mirror' needs mirror_url")
        return from_mirror(mirror_url, selection, ids)
    raise BookError(f"unknown books source {source!r}; use {', '.join(SOURCES[:-1])} or {SOURCES[-1]}")


def dedupe(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Keep the first record of each ebook id."""
    seen: set[int] = set()
    for record in records:
        if record["id"] not in seen:
            seen.add(record["id"])
            yield record
