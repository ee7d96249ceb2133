"""Markdown for reports, model cards and Dagster metadata: one table helper and one preview helper.

Dagster-free; ``assets/meta.py`` wraps these in ``MetadataValue`` objects.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

INLINE_MD_LIMIT = 1000
"""Dagster's UI shows a markdown entry in place only below this many characters (else behind "[Show Markdown]")."""

_LABEL = re.compile(r"(^|[\s_])(id|year|seed|rank|epoch|step|line)$", re.I)
"""Column headers whose integers are labels (an id, a year, an epoch number), written without separators."""


def is_label_column(header: str) -> bool:
    return bool(_LABEL.search(str(header).strip()))


def count_text(value: Any, header: str = "") -> str | None:
    """An integer as people read a count, ``12,345`` (``None`` for anything else); a column named as an id,
    a year, a seed, an epoch or a step (singular: ``steps`` is a count) keeps its digits as they are (``33870``, ``1851``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value) if is_label_column(header) else f"{value:,}"
    return None


def _cell(value: Any, digits: int, header: str = "") -> str:
    if isinstance(value, float):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if value == value else "nan"
    elif value is None:
        text = ""
    else:
        text = count_text(value, header) or str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def md_table(rows: Iterable[Sequence[Any]], head: Sequence[str], *, align: str | None = None,
             digits: int = 4) -> str:
    """A GitHub-style table. ``align`` is one character per column (``l``, ``r`` or ``c``); floats are
    rounded to ``digits`` places; integers get thousands separators (``12,345``) except in label columns
    (:func:`count_text`); ``|`` and newlines inside cells are escaped."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    spec = align or "l" * len(head)
    if len(spec) != len(head):
        raise ValueError(f"align has {len(spec)} columns, head has {len(head)}")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(marks[a] for a in spec) + "|"]
    for row in rows:
        cells = list(row)
        if len(cells) != len(head):
            raise ValueError(f"row has {len(cells)} cells, head has {len(head)}: {cells!r}")
        lines.append("| " + " | ".join(_cell(c, digits, h) for c, h in zip(cells, head, strict=True)) + " |")
    return "\n".join(lines)


def fit_md_table(rows: Sequence[Sequence[Any]], head: Sequence[str], *, align: str | None = None, digits: int = 4,
                 limit: int = INLINE_MD_LIMIT, more: Callable[[int], str] | None = None) -> str:
    """:func:`md_table` of as many leading ``rows`` as fit, with the line ``more(n)`` (default "… and n more")
    under it, in fewer than ``limit`` characters: a table the asset page shows in place. Where the rest is
    (a file, the catalogue) belongs in ``more``'s line."""
    more = more or (lambda n: f"… and {n:,} more")
    rows = list(rows)
    for shown in range(len(rows), -1, -1):
        md = md_table(rows[:shown], head, align=align, digits=digits)
        if shown < len(rows):
            md += "\n\n" + more(len(rows) - shown)
        if len(md) < limit:
            return md
    return clip(more(len(rows)), limit - 1)


_MD_SPECIAL = "\\`*_[]<>#|~"


def escape_md(text: str | None) -> str:
    """``text`` with markdown's markup characters backslash-escaped, so it renders as written."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in (text or ""))


def one_line(text: str | None, limit: int | None = None) -> str:
    """``text`` on one line for a table cell: its line breaks shown as `` / `` (the way verse is quoted in
    running text), blank lines as `` // ``; clipped to ``limit`` characters."""
    lines = [line.strip() for line in (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out = " / ".join(lines).replace(" /  / ", " // ").strip(" /")
    return clip(out, limit) if limit else out


def human_size(n_bytes: int | float) -> str:
    """A size in the one unit that reads best: ``812 B``, ``4.2 KB``, ``105.3 MB``, ``1.24 GB`` (powers of 1000)."""
    n = float(n_bytes)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{int(n)} B"


def clip(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis when it was longer."""
    text = text or ""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


FENCE_WIDTH = 90
"""The longest line a fenced block may hold: a code block does not wrap, so a longer line runs off the
metadata column of an asset page (and widens the table with it)."""

_BLOCK_START = re.compile(r"^(\s*)([-+=]|\d+[.)])")


def _escape_line(line: str) -> str:
    """One line of text as markdown that renders as written: markup escaped, and a leading ``-``, ``+``,
    ``=`` or ``1.`` (a list item or a heading underline otherwise) escaped too; leading spaces kept."""
    def escape(m: re.Match) -> str:
        mark = m.group(2)
        return m.group(1) + (mark[:-1] + "\\" + mark[-1] if mark[0].isdigit() else "\\" + mark)

    line = _BLOCK_START.sub(escape, escape_md(line.rstrip()), count=1)
    stripped = line.lstrip(" ")
    return "&nbsp;" * (len(line) - len(stripped)) + stripped


def lines_md(text: str | None) -> str:
    """Text as markdown that keeps its line breaks (a hard break ending each line, blank lines between
    paragraphs) and wraps its long lines: prose with line breaks, where a fenced block would run off."""
    paragraphs = re.split(r"\n[ \t]*\n", (text or "").replace("\r\n", "\n").replace("\r", "\n").strip("\n"))
    return "\n\n".join("\\\n".join(_escape_line(line) for line in para.split("\n")) for para in paragraphs)


def text_block(text: str | None, limit: int = 1200) -> str:
    """Text that keeps its line breaks (poems, prompts, replies) in rendered markdown, clipped to ``limit``
    characters: a fenced block while every line fits the column (:data:`FENCE_WIDTH`; verse), else
    :func:`lines_md` (prose, which then wraps)."""
    body = clip(text, limit)
    if all(len(line) <= FENCE_WIDTH for line in body.splitlines()):
        body = body.replace("```", "``\u200b`")
        return f"```text\n{body}\n```"
    return lines_md(body)


def fit_md(render: Callable[[int], str], sizes: Iterable[int], *, limit: int = INLINE_MD_LIMIT) -> str:
    """``render(size)`` for the first of ``sizes`` (largest first: characters per item, items shown...) whose
    markdown is shorter than ``limit``, so the asset page shows it in place; the smallest size's when none is
    (it then shows behind a click)."""
    md = ""
    for size in sizes:
        md = render(size)
        if len(md) < limit:
            break
    return md


def bullets_md(items: Sequence[str], *, limit: int = INLINE_MD_LIMIT, item_chars: int | None = None,
               more: Callable[[int], str] | None = None) -> str:
    """A markdown list of as many leading ``items`` (markdown already; each clipped to ``item_chars``) as fit,
    with ``more(n)`` (default "… and n more") after them, in fewer than ``limit`` characters."""
    more = more or (lambda n: f"… and {n:,} more")
    items = [clip(item, item_chars).replace("\\…", "…") if item_chars else item for item in items]
    for shown in range(len(items), -1, -1):
        md = "\n".join(f"- {item}" for item in items[:shown])
        if shown < len(items):
            md += ("\n\n" if md else "") + more(len(items) - shown)
        if len(md) < limit:
            return md
    return clip(more(len(items)), limit - 1)


def chat_preview(examples: Sequence[dict], n: int = 2, limit: int = 600) -> str:
    """The first ``n`` ChatML examples as markdown, each turn under its role with line breaks kept."""
    parts = []
    for index, example in enumerate(examples[:n], 1):
        turns = [f"**{m.get('role', '?')}**\n\n{text_block(m.get('content'), limit)}"
                 for m in example.get("messages", [])]
        parts.append(f"#### example {index}\n\n" + "\n\n".join(turns))
    return "\n\n".join(parts)
