"""Thyme's text corpus: documents from the sources an experiment names, cleaned as the seed cleaned them.

Sources (``experiments.CorpusRecipe.sources``):

* ``local``        a folder of ``.txt`` books with a ``manifest.jsonl`` (default: the eight books);
* ``platform``     the platform's own documents: ``.corpus`` files and theme chunk JSONL, at paths the
                   caller passes (the asset layer knows where those assets live);
* ``hf_gutenberg`` ``manu/project_gutenberg``, streamed, the language as split;
* ``hf_wikipedia`` ``wikipedia`` ``20220301.<lang>``, streamed, split ``train``.

Cleaning. A ``local`` book is cut as the seed's ``train_books.load_books`` cut it (:func:`seed_strip_markers`):
split at the first of ``"*** START OF"``, ``"***START OF"`` that occurs and keep everything after it (the rest
of the marker line, `` THE PROJECT GUTENBERG EBOOK ... ***``, stays in the text), then cut at the first of
``"*** END OF"``, ``"***END OF"``, ``"End of Project Gutenberg"`` that occurs. A Hub book (and the
evaluation's out-of-domain book) is cut after the whole ``*** START OF`` line and before ``*** END OF``
(:func:`strip_gutenberg`). Then, for every document, CRLF -> LF, three or more newlines -> two, runs of
spaces/tabs -> one space, strip. Minimum lengths: a raw book under ``min_book_chars`` is skipped, a cleaned
one under ``min_clean_chars`` dropped, an article under ``min_article_chars`` skipped. Every document not kept
becomes a :class:`Drop` with its reason (an empty, binary or non-UTF-8 file is one, naming the file); the rest
proceeds.

:func:`write_corpus` streams documents into JSONL shards inside a temporary folder and renames it into
place at the end, so a failed or killed build leaves nothing partial; a corpus with no document left
is an error. ``corpus.json`` records the build's :func:`source_key` (the recipe plus the sha256 of every
local and platform file it reads) and ``text_sha256``, the digest of the documents' texts joined as the
dataset joins them; :func:`existing_corpus` returns a finished corpus with the same key, so a
re-materialization rebuilds nothing unless a book, a platform document or the recipe changed. A Hub
source counts by its settings only (a stream has no digest to read before streaming it): delete the
folder to fetch it again.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillery_assets.io import JsonlError, atomic_path, atomic_write_text, iter_jsonl, iter_jsonl_lines, read_jsonl
from distillery_assets.io.hashing import JoinedDigest, json_fingerprint, sha256_file
from distillery_assets.thyme.experiments import (
    CorpusRecipe, HubGutenbergSource, HubWikipediaSource, LocalSource, PlatformSource,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "manifest.jsonl"
SHARD_DOCS = 1000  # documents per JSONL shard
CORPUS_MANIFEST = "corpus.json"
DROPS_FILE = "drops.jsonl"
CORPUS_FORMAT = 1  # bump when the cleaning or the shard format changes: corpora written before are rebuilt


class CorpusError(ValueError):
    """A corpus that cannot be built (nothing left after cleaning, a missing folder)."""


@dataclass
class Document:
    name: str
    source: str  # "local:alice_wonderland.txt", "hf_gutenberg:1342", ...
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Drop:
    source: str
    reason: str


Item = Document | Drop


# ------------------------------------------------------------------------------------------------ cleaning

START_MARK, END_MARK = "*** START OF", "*** END OF"


def strip_gutenberg(text: str) -> str:
    """The text between the line of the ``*** START OF`` marker and the ``*** END OF`` marker."""
    start = text.find(START_MARK)
    if start != -1:
        newline = text.find("\n", start)
        text = text[newline + 1:] if newline != -1 else ""
    end = text.find(END_MARK)
    if end != -1:
        text = text[:end]
    return text


SEED_START_MARKS = ("*** START OF", "***START OF")
SEED_END_MARKS = ("*** END OF", "***END OF", "End of Project Gutenberg")
# Names the rule that cuts local books; it enters the corpus key of every local source, so a corpus cut by
# another rule (before issue 25: after the whole START line, at "*** END OF" only) is rebuilt.
LOCAL_CUT = "seed-load_books"


def seed_strip_markers(text: str) -> str:
    """The seed's ``load_books`` cut: for the first marker of :data:`SEED_START_MARKS` that occurs in the text,
    the text after its first occurrence (the rest of that line included); then, for the first marker of
    :data:`SEED_END_MARKS` that occurs, the text before its first occurrence. The lists are tried in order,
    so ``"End of Project Gutenberg"`` cuts only a book with neither ``END OF`` marker."""
    for mark in SEED_START_MARKS:
        if mark in text:
            text = text.split(mark, 1)[1]
            break
    for mark in SEED_END_MARKS:
        if mark in text:
            text = text.split(mark, 1)[0]
            break
    return text


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n")
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = re.sub(r"[ \t]+", " ", text)
    return text.strip()


def clean_book(text: str) -> str:
    return normalise(strip_gutenberg(text))


def clean_local_book(text: str) -> str:
    """A local book as the seed's ``train_books.load_books`` cleaned it."""
    return normalise(seed_strip_markers(text))


def decode_text_file(path: Path) -> str:
    """The file's text, or ValueError saying why it is not a text book (empty, binary, not UTF-8)."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError("empty file")
    if b"\x00" in data:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (invalid byte at offset {exc.start})") from None


def book_item(source: str, name: str, raw: str, recipe: CorpusRecipe, meta: dict[str, Any] | None = None,
              max_chars: int | None = None, clean: Callable[[str], str] = clean_book) -> Item:
    if len(raw) < recipe.min_book_chars:
        return Drop(source, f"raw text has {len(raw):,} characters, under min_book_chars={recipe.min_book_chars:,}")
    text = clean(raw)
    if max_chars is not None:
        text = text[:max_chars]
    if len(text) < recipe.min_clean_chars:
        return Drop(source, f"cleaned text has {len(text):,} characters, "
                            f"under min_clean_chars={recipe.min_clean_chars:,}")
    return Document(name, source, text, dict(meta or {}))


# ------------------------------------------------------------------------------------------------- sources

def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    rows = {}
    for line_no, row in iter_jsonl(path, on_error="yield", objects=False):
        try:
            if isinstance(row, JsonlError):
                raise row.cause
            rows[row["file"]] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"{path}:{line_no}: not a manifest row with a 'file' field ({exc})") from None
    return rows


def iter_local(src: LocalSource, recipe: CorpusRecipe, root: Path = REPO_ROOT) -> Iterator[Item]:
    """Books of a folder, sorted by file name (the seed joined them in ``glob`` order, which is not fixed)."""
    folder = Path(src.path) if Path(src.path).is_absolute() else root / src.path
    if not folder.is_dir():
        raise CorpusError(f"{folder}: local corpus folder not found (corpus.sources: kind local, path {src.path})")
    manifest = read_manifest(folder)
    paths = sorted(folder.glob("*.txt"))
    if src.files is not None:
        missing = sorted(set(src.files) - {p.name for p in paths})
        if missing:
            raise CorpusError(f"{folder}: corpus.sources.files names files that are not there: {missing}")
        paths = [p for p in paths if p.name in set(src.files)]
    for path in paths:
        source = f"local:{path.name}"
        try:
            raw = decode_text_file(path)
        except ValueError as exc:
            yield Drop(source, f"{path}: {exc}")
            continue
        meta = {k: v for k, v in manifest.get(path.name, {}).items() if k in ("gutenberg_id", "title", "author")}
        listed = manifest.get(path.name)
        if listed and listed.get("sha256") not in (None, sha256_file(path)):
            meta["manifest_mismatch"] = "sha256 differs from manifest.jsonl"
            log.warning("%s: sha256 differs from %s", path, folder / MANIFEST)
        yield book_item(source, path.stem, raw, recipe, meta, src.max_chars_per_book, clean_local_book)


def _load_dataset(*args: Any, **kwargs: Any):
    import datasets

    return datasets.load_dataset(*args, **kwargs)


def iter_hf_gutenberg(src: HubGutenbergSource, recipe: CorpusRecipe) -> Iterator[Item]:
    rows = _load_dataset(src.dataset, split=src.language, streaming=True)
    kept = 0
    for n, row in enumerate(rows):
        if src.max_books is not None and kept >= src.max_books:
            break
        book_id = str(row.get("id") or n)
        source = f"hf_gutenberg:{book_id}"
        raw = row.get("text")
        if not isinstance(raw, str) or not raw.strip():
            yield Drop(source, "row has no text")
            continue
        item = book_item(source, f"gutenberg-{book_id}", raw, recipe, {"gutenberg_id": book_id})
        kept += isinstance(item, Document)
        yield item


def iter_hf_wikipedia(src: HubWikipediaSource, recipe: CorpusRecipe) -> Iterator[Item]:
    rows = _load_dataset(src.dataset, f"{src.dump}.{src.language}", split="train", streaming=True)
    kept = 0
    for n, row in enumerate(rows):
        if src.max_articles is not None and kept >= src.max_articles:
            break
        article_id = str(row.get("id") or n)
        source = f"hf_wikipedia:{article_id}"
        text = row.get("text") if isinstance(row.get("text"), str) else ""
        if len(text) < recipe.min_article_chars:
            yield Drop(source, f"article has {len(text):,} characters, "
                               f"under min_article_chars={recipe.min_article_chars:,}")
            continue
        title = str(row.get("title") or "")
        kept += 1
        yield Document(f"wiki-{article_id}", source, f"# {title}\n\n{text}\n\n".strip(),
                       {"title": title, "url": row.get("url", "")})


def iter_platform(src: PlatformSource, recipe: CorpusRecipe, paths: dict[str, list[Path]]) -> Iterator[Item]:
    """``paths["corpus"]``: ``.corpus`` files; ``paths["theme_chunks"]``: theme chunk JSONL files."""
    for asset in src.assets:
        files = paths.get(asset)
        if not files:
            raise CorpusError(f"corpus.sources: kind platform names {asset!r} but no files of it were given")
        for path in sorted(Path(p) for p in files):
            if asset == "corpus":
                source = f"corpus:{path.name}"
                try:
                    text = normalise(decode_text_file(path))
                except ValueError as exc:
                    yield Drop(source, f"{path}: {exc}")
                    continue
                yield _article(source, path.stem, text, recipe, {"path": str(path)})
            else:
                yield from _theme_chunks(path, recipe)


def _article(source: str, name: str, text: str, recipe: CorpusRecipe, meta: dict[str, Any]) -> Item:
    if len(text) < recipe.min_article_chars:
        return Drop(source, f"document has {len(text):,} characters, under min_article_chars={recipe.min_article_chars:,}")
    return Document(name, source, text, meta)


def _theme_chunks(path: Path, recipe: CorpusRecipe) -> Iterator[Item]:
    try:
        lines = decode_text_file(path).splitlines()
    except ValueError as exc:
        yield Drop(f"theme_chunks:{path.name}", f"{path}: {exc}")
        return
    for line_no, row in iter_jsonl_lines(lines, path, on_error="yield", objects=False):
        source = f"theme_chunks:{path.name}:{line_no}"
        try:
            if isinstance(row, JsonlError):
                raise row.cause
            text = row["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            yield Drop(source, f"not a chunk row with a 'text' field ({exc})")
            continue
        yield _article(source, str(row.get("chunk_id") or f"{path.stem}-{line_no}"), normalise(text), recipe,
                       {"source_title": row.get("source_title", "")})


def iter_sources(recipe: CorpusRecipe, *, root: Path = REPO_ROOT,
                 platform_paths: dict[str, list[Path]] | None = None) -> Iterator[Item]:
    for src in recipe.sources:
        if isinstance(src, LocalSource):
            yield from iter_local(src, recipe, root)
        elif isinstance(src, HubGutenbergSource):
            yield from iter_hf_gutenberg(src, recipe)
        elif isinstance(src, HubWikipediaSource):
            yield from iter_hf_wikipedia(src, recipe)
        elif isinstance(src, PlatformSource):
            yield from iter_platform(src, recipe, platform_paths or {})
        else:  # pragma: no cover - the schema admits no other kind
            raise CorpusError(f"unknown corpus source {src!r}")


def _local_files(src: LocalSource, root: Path) -> list[Path]:
    folder = Path(src.path) if Path(src.path).is_absolute() else root / src.path
    paths = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if src.files is not None:
        paths = [p for p in paths if p.name in set(src.files)]
    return paths + ([folder / MANIFEST] if (folder / MANIFEST).exists() else [])


def source_key(recipe: CorpusRecipe, *, root: Path = REPO_ROOT,
               platform_paths: dict[str, list[Path]] | None = None) -> str:
    """What a corpus is made from: the recipe, the format, and the sha256 of every local book (and
    manifest) and platform document it reads, plus :data:`LOCAL_CUT` where local books are read. Hub
    sources enter by their settings only."""
    files: list[list[str]] = []
    for src in recipe.sources:
        if isinstance(src, LocalSource):
            files += [[str(p), sha256_file(p)] for p in _local_files(src, root)]
        elif isinstance(src, PlatformSource):
            for asset in src.assets:
                files += [[str(p), sha256_file(p)] for p in sorted(Path(q) for q in (platform_paths or {}).get(asset, []))]
    body = {"format": CORPUS_FORMAT, "recipe": recipe.model_dump(mode="json"), "files": files}
    if any(isinstance(src, LocalSource) for src in recipe.sources):
        body["local_cut"] = LOCAL_CUT  # only corpora with local books: the others keep the key they had
    return json_fingerprint(body)


# --------------------------------------------------------------------------------------------- on disk

@dataclass
class CorpusStats:
    documents: int = 0
    characters: int = 0
    bytes: int = 0
    dropped: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    source_key: str | None = None
    text_sha256: str = ""  # sha256 of the documents' texts joined by a blank line (what the dataset chunks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_corpus(items: Iterable[Item], folder: Path, *,
                 on_drop: Callable[[Drop], None] | None = None, key: str | None = None) -> CorpusStats:
    """Stream documents into ``folder/docs-NNNNN.jsonl`` (plus ``drops.jsonl`` and ``corpus.json``, which
    records ``key``, the caller's :func:`source_key`).

    The folder appears only when complete; nothing is left if this raises (no document left, a source
    failing)."""
    folder = Path(folder)
    stats = CorpusStats(source_key=key)
    digest = JoinedDigest()
    with atomic_path(folder, is_dir=True) as tmp:
        shard, drops = None, open(tmp / DROPS_FILE, "w", encoding="utf-8")
        try:
            for item in items:
                if isinstance(item, Drop):
                    stats.dropped += 1
                    drops.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
                    log.info("dropped %s: %s", item.source, item.reason)
                    if on_drop is not None:
                        on_drop(item)
                    continue
                if stats.documents % SHARD_DOCS == 0:
                    if shard is not None:
                        shard.close()
                    stats.shards.append(f"docs-{len(stats.shards):05d}.jsonl")
                    shard = open(tmp / stats.shards[-1], "w", encoding="utf-8")
                shard.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
                digest.add(item.text)
                stats.documents += 1
                stats.characters += len(item.text)
                stats.bytes += len(item.text.encode("utf-8"))
                kind = item.source.split(":", 1)[0]
                stats.by_source[kind] = stats.by_source.get(kind, 0) + 1
        finally:
            drops.close()
            if shard is not None:
                shard.close()
        if stats.documents == 0:
            raise CorpusError(f"{folder}: no document left after cleaning ({stats.dropped} dropped; "
                              f"see the reasons logged above)")
        stats.text_sha256 = digest.hexdigest()
        atomic_write_text(tmp / CORPUS_MANIFEST, json.dumps(stats.to_dict(), indent=1))
    return stats


def corpus_stats(folder: Path) -> CorpusStats:
    """The ``corpus.json`` of a written corpus."""
    folder = Path(folder)
    try:
        data = json.loads((folder / CORPUS_MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{folder}: not a thyme corpus (no {CORPUS_MANIFEST})") from None
    known = CorpusStats.__dataclass_fields__
    return CorpusStats(**{k: v for k, v in data.items() if k in known})


def existing_corpus(folder: Path, key: str) -> CorpusStats | None:
    """The finished corpus in ``folder`` if it was built from the same sources (``key``), else None."""
    folder = Path(folder)
    try:
        stats = corpus_stats(folder)
    except (CorpusError, ValueError, TypeError):
        return None
    if stats.source_key != key or not stats.text_sha256 or not all((folder / s).exists() for s in stats.shards):
        return None
    return stats


def read_drops(folder: Path) -> list[Drop]:
    path = Path(folder) / DROPS_FILE
    if not path.exists():
        return []
    return [Drop(**row) for row in read_jsonl(path)]


def read_corpus(folder: Path) -> Iterator[Document]:
    """The documents of a written corpus, in the order they were written."""
    folder = Path(folder)
    try:
        stats = json.loads((folder / CORPUS_MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{folder}: not a thyme corpus (no {CORPUS_MANIFEST})") from None
    for shard in stats["shards"]:
        for _, row in iter_jsonl(folder / shard):
            yield Document(**row)
