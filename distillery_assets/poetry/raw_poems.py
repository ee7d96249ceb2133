"""Read raw poems from a folder tree: ``*.txt`` (one poem per file) and ``*.jsonl`` (one per line).

Bad input never stops the rest: an empty file, a non-UTF-8 file, a malformed JSONL line, or a JSONL
record without a ``text``/``poem``/``content`` string becomes a :class:`Reject` naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from distillery_assets.io import JsonlError, iter_jsonl_lines
from distillery_assets.io.hashing import sha256_text
from distillery_assets.rejects import Reject

TEXT_FIELDS = ("text", "poem", "content")


@dataclass(frozen=True)
class Poem:
    id: str  # stable: "<quality>:<relative source>[:line]"
    text: str
    source: str  # "good/dickinson_001.txt" or "bad/drafts.jsonl:3"
    quality: str  # "good" | "bad"

    def to_dict(self) -> dict:
        return asdict(self)


def _normalise(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n").strip()


def _unreadable(exc: Exception | None) -> str:
    """Why a JSONL line gave no record, in the reject log's words."""
    if isinstance(exc, UnicodeDecodeError):
        return f"line is not UTF-8 ({exc.reason} at byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSONL line: {exc.msg} (column {exc.colno})"
    return str(exc)  # "expected a JSON object, got <type>"


def _from_jsonl(path: Path, rel: str, quality: str) -> tuple[list[Poem], list[Reject]]:
    poems, rejects = [], []
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        return [], [Reject(rel, f"cannot read file: {exc}")]
    for number, record in iter_jsonl_lines(raw_lines, path, on_error="yield"):
        where = f"{rel}:{number}"
        if isinstance(record, JsonlError):
            rejects.append(Reject(where, _unreadable(record.cause)))
            continue
        field = next((f for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
        if field is None:
            rejects.append(Reject(where, f"no string field among {', '.join(TEXT_FIELDS)}"))
            continue
        text = _normalise(record[field])
        if not text:
            rejects.append(Reject(where, f"field {field!r} is empty"))
            continue
        poems.append(Poem(id=f"{quality}:{where}", text=text, source=where, quality=quality))
    if not poems and not rejects:
        rejects.append(Reject(rel, "empty file"))
    return poems, rejects


def _from_txt(path: Path, rel: str, quality: str) -> tuple[list[Poem], list[Reject]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Reject(rel, f"file is not UTF-8 ({exc.reason} at byte {exc.start})")]
    except OSError as exc:
        return [], [Reject(rel, f"cannot read file: {exc}")]
    text = _normalise(text)
    if not text:
        return [], [Reject(rel, "empty file")]
    return [Poem(id=f"{quality}:{rel}", text=text, source=rel, quality=quality)], []


def poem_files(root: Path, quality: str) -> list[Path]:
    """The files :func:`load_poems` reads under ``root/<quality>/`` (sorted; dot-files skipped; none when the
    folder is missing), each poem file or reject alike."""
    folder = Path(root) / quality
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]


def load_poems(root: Path, quality: str) -> tuple[list[Poem], list[Reject]]:
    """All poems under ``root/<quality>/`` in sorted path order, plus rejects.

    A missing folder yields nothing (the caller decides whether that is an error).
    """
    folder = Path(root) / quality
    poems: list[Poem] = []
    rejects: list[Reject] = []
    for path in poem_files(root, quality):
        rel = f"{quality}/{path.relative_to(folder).as_posix()}"
        if path.suffix == ".txt":
            got, bad = _from_txt(path, rel, quality)
        elif path.suffix == ".jsonl":
            got, bad = _from_jsonl(path, rel, quality)
        else:
            got, bad = [], [Reject(rel, f"unsupported file type {path.suffix or '(none)'}; use .txt or .jsonl")]
        poems.extend(got)
        rejects.extend(bad)
    return _dedupe(poems, rejects)


def _dedupe(poems: list[Poem], rejects: list[Reject]) -> tuple[list[Poem], list[Reject]]:
    seen: dict[str, str] = {}
    kept = []
    for poem in poems:
        digest = sha256_text(poem.text)
        if digest in seen:
            rejects.append(Reject(poem.source, f"duplicate of {seen[digest]}"))
            continue
        seen[digest] = poem.source
        kept.append(poem)
    return kept, rejects


def read_requests(path: Path) -> list[str]:
    """User requests, one per line (``#`` comments and blank lines skipped)."""
    text = Path(path).read_bytes().decode("utf-8-sig")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def poems_from_records(records: list[dict], source: str) -> list[Poem]:
    """Rebuild :class:`Poem` objects from a JSONL file written by :meth:`Poem.to_dict`."""
    out = []
    for number, rec in enumerate(records, start=1):
        try:
            out.append(Poem(id=rec["id"], text=rec["text"], source=rec["source"], quality=rec["quality"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{number}: not a poem record ({exc})") from exc
    return out
