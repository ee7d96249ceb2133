"""The documents a filter scores, as one shape: ``{id, title, content, url, source, published_date}``.

One reader per kind of source in ``config.yaml``'s ``sources``:

* ``asset`` — a platform asset's files: ``story_corpus`` / ``encyclopedia_corpus`` (the ``.corpus`` files
  under the corpus root's ``stories/`` or ``encyclopedia/``; id = path relative to the root) and
  ``gutenberg_chunks`` / ``theme_chunks`` (chunk JSONL; id = ``chunk_id``). :func:`asset_documents` takes
  the location (the corpus root, or the JSONL path) that :class:`.pipeline.SourceLocator` gives.
* ``jsonl`` — a file of articles; a line that is not JSON or lacks ``id``/``content`` is a reject naming
  ``file:line`` (the rest proceeds).
* ``hub`` — ``datasets.load_dataset(dataset, config_name, split=, streaming=True, data_files=)``, first
  ``limit`` rows, columns mapped by ``fields``.

:func:`document_text` is a document's title and content as one text, everywhere (the rules' text and the
scorer's input differ only in the separator; see :data:`RULES_SEP`, :data:`MODEL_SEP`).

Each reader yields ``Document`` dicts or :class:`SourceReject`; :func:`collect` gathers them, applies the
source's ``limit`` (evenly spread over the source for local sources, the first rows for a stream) and
turns repeated ids into rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distillery_assets.filters.config import AssetSource, FilterDefinition, HubSource, JsonlSource
from distillery_assets.io import JsonlError, iter_jsonl

DOC_FIELDS = ("id", "title", "content", "url", "source", "published_date")
Document = dict[str, Any]


@dataclass(frozen=True)
class SourceReject:
    where: str  # "file:line", "hub:<dataset> row <n>", ...
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


RULES_SEP = "\n"
"""Between title and content in the text the rules read (prefilter, caps, gatekeepers): decisions and labels
already persisted were made on it, and a prefilter pattern is the user's regex."""
MODEL_SEP = "\n\n"
"""Between title and content in the scorer's input, as the seed built it: embedding cache keys and score-shard
digests hash that text."""


def document_text(doc: Mapping[str, Any], sep: str = RULES_SEP) -> str:
    """A document's title and content as one text (the one spelling): ``title<sep>content``, the content alone
    when there is no title; ``text`` stands in for a missing ``content`` (a split or shard row)."""
    title = str(doc.get("title") or "").strip()
    content = str(doc.get("content") or doc.get("text") or "")
    return f"{title}{sep}{content}" if title else content


def document(id: Any, content: Any, title: Any = "", url: Any = "", source: Any = "",
             published_date: Any = "") -> Document:
    return {"id": str(id), "title": "" if title is None else str(title), "content": "" if content is None else str(content),
            "url": "" if url is None else str(url), "source": "" if source is None else str(source),
            "published_date": "" if published_date is None else str(published_date)}


# -------------------------------------------------------------------------------------------- readers

def corpus_documents(root: Path, half: str) -> Iterator[Document]:
    """``.corpus`` files under ``<root>/<half>/`` (``stories`` or ``encyclopedia``), sorted by path."""
    base = Path(root) / half
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*.corpus")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        leaf = path.parent.relative_to(base).as_posix().replace("/", " / ").replace("_", " ")
        yield document(rel, text, title=f"{leaf}: {path.stem.replace('_', ' ')}", source=f"corpus/{half}")


def chunk_documents(path: Path, source: str) -> Iterator[Document | SourceReject]:
    """Rows of the theme pipeline's chunk JSONL (``chunk_id``, ``source_title``, ``text``, ...)."""
    for number, row in iter_jsonl(Path(path), on_error="yield"):
        where = f"{path}:{number}"
        if isinstance(row, JsonlError):
            yield SourceReject(where, "malformed_line", row.reason)
            continue
        if "chunk_id" not in row or not isinstance(row.get("text"), str):
            yield SourceReject(where, "missing_field", "a chunk needs 'chunk_id' and 'text'")
            continue
        yield document(row["chunk_id"], row["text"], title=row.get("source_title") or "", source=source,
                       published_date=row.get("pub_year") or "")


def jsonl_documents(path: Path) -> Iterator[Document | SourceReject]:
    """Articles ``{id, title, content, url, source, published_date}``; ``content`` may be ``text``."""
    for number, row in iter_jsonl(Path(path), on_error="yield"):
        where = f"{path}:{number}"
        if isinstance(row, JsonlError):
            yield SourceReject(where, "malformed_line", row.reason)
            continue
        content = row.get("content", row.get("text"))
        if row.get("id") in (None, ""):
            yield SourceReject(where, "missing_field", "id")
            continue
        if not isinstance(content, str):
            yield SourceReject(where, "missing_field", "content (a string)")
            continue
        yield document(row["id"], content, row.get("title"), row.get("url"), row.get("source"),
                       row.get("published_date"))


def hub_documents(src: HubSource, load_dataset: Callable[..., Iterable[dict]] | None = None
                  ) -> Iterator[Document | SourceReject]:
    """The first ``src.limit`` rows of a streamed Hub dataset. ``load_dataset`` defaults to
    ``datasets.load_dataset`` (imported only here)."""
    if load_dataset is None:
        from datasets import load_dataset  # noqa: PLC0415 (heavy import, only when a Hub source is used)
    kwargs: dict[str, Any] = {"split": src.split, "streaming": True}
    if src.data_files:
        kwargs["data_files"] = list(src.data_files)
    if src.revision:
        kwargs["revision"] = src.revision
    args = (src.dataset,) if src.config_name is None else (src.dataset, src.config_name)
    stream = load_dataset(*args, **kwargs)
    f = src.fields
    for n, row in enumerate(stream):
        if n >= src.limit:
            break
        where = f"hub:{src.dataset} row {n}"
        content = row.get(f.content)
        if not isinstance(content, str):
            yield SourceReject(where, "missing_field", f"column {f.content!r} (content)")
            continue
        rid = row.get(f.id) if f.id else None
        get = lambda col: row.get(col) if col else ""  # noqa: E731
        yield document(rid if rid not in (None, "") else f"{src.dataset}#{n}", content, get(f.title), get(f.url),
                       get(f.source) or src.dataset, get(f.published_date))


def asset_documents(src: AssetSource, location: Path) -> Iterator[Document | SourceReject]:
    if src.asset == "story_corpus":
        return corpus_documents(location, "stories")
    if src.asset == "encyclopedia_corpus":
        return corpus_documents(location, "encyclopedia")
    return chunk_documents(location, src.asset)


# -------------------------------------------------------------------------------------------- collection

def spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the list (deterministic, order kept)."""
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


@dataclass
class Collected:
    documents: list[Document]
    rejects: list[SourceReject]
    per_source: dict[str, int]


def collect(definition: FilterDefinition, locate: Callable[[AssetSource], Path],
            load_dataset: Callable[..., Iterable[dict]] | None = None) -> Collected:
    """Every configured source's documents, in config order; ``locate(asset_source)`` gives the path of an
    asset source's files (corpus root or chunk JSONL)."""
    docs: list[Document] = []
    rejects: list[SourceReject] = []
    per_source: dict[str, int] = {}
    seen: set[str] = set()
    for i, src in enumerate(definition.config.sources):
        if isinstance(src, AssetSource):
            label, items = src.asset, asset_documents(src, Path(locate(src)))
        elif isinstance(src, JsonlSource):
            label, items = f"jsonl:{src.path}", jsonl_documents(definition.resolve(src.path))
        else:
            label, items = f"hub:{src.dataset}", hub_documents(src, load_dataset)
        good: list[Document] = []
        for item in items:
            if isinstance(item, SourceReject):
                rejects.append(item)
            else:
                good.append(item)
        if not isinstance(src, HubSource):
            good = spread(good, src.limit)
        kept = 0
        for doc in good:
            if doc["id"] in seen:
                rejects.append(SourceReject(f"sources.{i} ({label})", "duplicate_id", doc["id"]))
                continue
            seen.add(doc["id"])
            docs.append(doc)
            kept += 1
        per_source[label] = per_source.get(label, 0) + kept
    return Collected(docs, rejects, per_source)
