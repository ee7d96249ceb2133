"""Theme keyword counting: per chunk, per theme, how many DISTINCT keywords occur as whole words.

The counting rule is the seed's: lower-case the text; keyword ``kw`` of theme ``t`` counts 1 if the regex
``\\bkw\\b`` finds it anywhere (0 otherwise); ``total`` is the sum over themes, so a keyword listed under two
themes counts once in each. :func:`count_reference` is that rule written the slow way (one regex search per
keyword) and is kept as the oracle; :class:`KeywordCounter` gives the same numbers with one Hyperscan
database over all keywords, scanning many chunks per call and mapping match offsets back to chunks.

Exactness notes: the text is lower-cased by Python (``str.lower``, as the seed) before scanning, and the
database runs in UTF-8 + Unicode-property mode so ``\\b`` treats accented letters as word characters the way
Python's ``re`` does. Chunks are joined by ``"\\n"``, a non-word character that no keyword contains, so
``\\b`` behaves at each chunk's edges exactly as at the start and end of a lone string.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

Counts = dict[str, int]


class KeywordConfigError(ValueError):
    pass


def load_keyword_sets(path: Path) -> dict[str, list[str]]:
    """``{theme: [keyword, ...]}`` from JSON; keywords must be non-empty single-line strings."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeywordConfigError(f"{path}: cannot read keyword sets: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise KeywordConfigError(f"{path}: expected an object of theme -> [keywords]")
    for theme, words in raw.items():
        if theme == "total":
            raise KeywordConfigError(f"{path}: 'total' is reserved and cannot be a theme name")
        if not isinstance(words, list) or not words:
            raise KeywordConfigError(f"{path}: theme {theme!r} must be a non-empty list")
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word.strip() or "\n" in word:
                raise KeywordConfigError(f"{path}: theme {theme!r} keyword #{i} is not a one-line word: {word!r}")
    return {theme: list(words) for theme, words in raw.items()}


def count_reference(text: str, keyword_sets: dict[str, list[str]]) -> Counts:
    """The seed's method, unchanged in effect: one ``re.search(r"\\bkw\\b")`` per keyword per theme."""
    lowered = text.lower()
    counts = {
        theme: sum(1 for kw in words if re.search(r"\b" + re.escape(kw.lower()) + r"\b", lowered))
        for theme, words in keyword_sets.items()
    }
    counts["total"] = sum(counts.values())
    return counts


class KeywordCounter:
    """Hyperscan-backed counter with the seed's exact semantics (see module docstring)."""

    def __init__(self, keyword_sets: dict[str, list[str]], batch_bytes: int = 4 << 20):
        import hyperscan

        self.themes = list(keyword_sets)
        self.keywords: list[str] = []
        index: dict[str, int] = {}
        for words in keyword_sets.values():
            for kw in words:
                index.setdefault(kw.lower(), len(index))
        self.keywords = list(index)
        # membership[k, t] = how many times keyword k is listed under theme t (the seed counts each entry)
        self.membership = np.zeros((len(self.keywords), len(self.themes)), dtype=np.int32)
        for t, words in enumerate(keyword_sets.values()):
            for kw in words:
                self.membership[index[kw.lower()], t] += 1
        self.batch_bytes = batch_bytes
        # Hyperscan has no Unicode-aware \b, so each keyword edge that is an ASCII word character gets an
        # ASCII \b in the pattern, and any match whose neighbouring byte is non-ASCII (or whose keyword edge
        # is not an ASCII word character) is re-checked with Python's own word rule afterwards.
        encoded = [kw.encode("utf-8") for kw in self.keywords]
        self._kw_len = np.array([len(b) for b in encoded], dtype=np.int64)
        self._loose_left = np.array([not _ascii_word(kw[0]) for kw in self.keywords], dtype=bool)
        self._loose_right = np.array([not _ascii_word(kw[-1]) for kw in self.keywords], dtype=bool)
        patterns = [
            (("" if _ascii_word(kw[0]) is False else r"\b") + re.escape(kw)
             + ("" if _ascii_word(kw[-1]) is False else r"\b")).encode("utf-8")
            for kw in self.keywords
        ]
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns), flags=0)

    # -- scanning -------------------------------------------------------------------------------
    def presence(self, texts: Sequence[str]) -> np.ndarray:
        """Boolean matrix ``[len(texts), n_keywords]``: keyword k occurs as a whole word in text i."""
        present = np.zeros((len(texts), len(self.keywords)), dtype=bool)
        start = 0
        while start < len(texts):
            stop, size = start, 0
            while stop < len(texts) and (stop == start or size < self.batch_bytes):
                size += len(texts[stop]) + 1
                stop += 1
            self._scan_batch(texts, start, stop, present)
            start = stop
        return present

    def _scan_batch(self, texts: Sequence[str], start: int, stop: int, present: np.ndarray) -> None:
        encoded = [t.lower().encode("utf-8") for t in texts[start:stop]]
        ends = np.cumsum([len(b) + 1 for b in encoded]) - 1  # offset of each chunk's "\n" separator
        buffer = b"\n".join(encoded) + b"\n"
        hits_id: list[int] = []
        hits_end: list[int] = []
        add_id, add_end = hits_id.append, hits_end.append

        def on_match(kw_id, _from, to, _flags, _ctx):
            add_id(kw_id)
            add_end(to)

        self._db.scan(buffer, match_event_handler=on_match)
        if not hits_id:
            return
        ids = np.asarray(hits_id, dtype=np.int64)
        to = np.asarray(hits_end, dtype=np.int64)
        frm = to - self._kw_len[ids]
        raw = np.frombuffer(buffer, dtype=np.uint8)
        before = np.where(frm > 0, raw[np.maximum(frm - 1, 0)], 0)
        after = raw[np.minimum(to, len(raw) - 1)]  # the buffer ends with "\n", so ``to`` is always in range
        suspect = (before >= 0x80) | (after >= 0x80) | self._loose_left[ids] | self._loose_right[ids]
        if suspect.any():
            keep = ~suspect
            for i in np.flatnonzero(suspect):
                keep[i] = _python_boundaries(buffer, int(frm[i]), int(to[i]))
            ids, to = ids[keep], to[keep]
        rows = np.searchsorted(ends, to - 1, side="right") + start
        present[rows, ids] = True

    def count_matrix(self, texts: Sequence[str]) -> np.ndarray:
        """Integer matrix ``[len(texts), n_themes]`` of distinct-keyword counts per theme."""
        # float32 matmul goes through BLAS; every value is a small integer, so the result is exact
        per_theme = self.presence(texts).astype(np.float32) @ self.membership.astype(np.float32)
        return np.rint(per_theme).astype(np.int64)

    def count_many(self, texts: Sequence[str]) -> list[Counts]:
        out = []
        themes = self.themes
        for row in self.count_matrix(texts).tolist():
            counts = dict(zip(themes, row))
            counts["total"] = sum(row)
            out.append(counts)
        return out

    def count(self, text: str) -> Counts:
        return self.count_many([text])[0]

    def distinct_keywords(self, text: str) -> set[str]:
        """The keywords (any theme) present as whole words in ``text``."""
        row = self.presence([text])[0]
        return {self.keywords[k] for k in np.flatnonzero(row)}


def _ascii_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _is_word(ch: str) -> bool:
    """Python ``re``'s ``\\w`` for str patterns."""
    return ch.isalnum() or ch == "_"


def _char_before(buffer: bytes, pos: int) -> str:
    start = pos - 1
    while start > 0 and 0x80 <= buffer[start] < 0xC0:  # step back over UTF-8 continuation bytes
        start -= 1
    return buffer[start:pos].decode("utf-8", errors="replace") if pos > 0 else ""


def _char_after(buffer: bytes, pos: int) -> str:
    end = pos + 1
    while end < len(buffer) and 0x80 <= buffer[end] < 0xC0:
        end += 1
    return buffer[pos:end].decode("utf-8", errors="replace") if pos < len(buffer) else ""


def _python_boundaries(buffer: bytes, frm: int, to: int) -> bool:
    """Would ``\\b`` hold at both ends of ``buffer[frm:to]`` under Python's Unicode word rule?"""
    word = buffer[frm:to].decode("utf-8")
    left, right = _char_before(buffer, frm), _char_after(buffer, to)
    left_ok = _is_word(word[0]) != (bool(left) and _is_word(left))
    right_ok = _is_word(word[-1]) != (bool(right) and _is_word(right))
    return left_ok and right_ok


class ChunkFilter:
    """Keeps the chunk rows whose keyword total reaches ``min_matches``, counting them in batches of
    ``batch_rows`` so a full-size corpus never sits in memory at once. While :meth:`kept` streams, it records
    every row's total, how many kept rows hit each theme, and the counting time and megabytes scanned."""

    def __init__(self, counter: KeywordCounter, min_matches: int, batch_rows: int = 8192):
        self.counter, self.min_matches, self.batch_rows = counter, min_matches, batch_rows
        self.totals: list[int] = []
        self.theme_hits: Counter = Counter()
        self.seconds = 0.0
        self.megabytes = 0.0

    def kept(self, rows: Iterable[dict]) -> Iterator[dict]:
        """The kept rows, each with its ``keyword_counts`` added."""
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) == self.batch_rows:
                yield from self._flush(batch)
                batch = []
        yield from self._flush(batch)

    def _flush(self, batch: list[dict]) -> Iterator[dict]:
        started = time.perf_counter()
        counts = self.counter.count_many([r["text"] for r in batch])
        self.seconds += time.perf_counter() - started
        self.megabytes += sum(len(r["text"].encode("utf-8")) for r in batch) / 1e6
        for row, count in zip(batch, counts, strict=True):
            self.totals.append(count["total"])
            if count["total"] >= self.min_matches:
                self.theme_hits.update({t: 1 for t in self.counter.themes if count[t]})
                yield {**row, "keyword_counts": count}

    @property
    def rate_mb_s(self) -> float:
        return round(self.megabytes / self.seconds, 1) if self.seconds > 0 else 0.0


def histogram(totals: Iterable[int], cap: int = 10) -> dict[str, int]:
    """Counts of chunks by total matches, the last bucket being ``>=cap``."""
    hist: dict[str, int] = {}
    for total in totals:
        key = str(total) if total < cap else f">={cap}"
        hist[key] = hist.get(key, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: int(kv[0].lstrip(">="))))
