"""Markdown for reports, model cards and Dagster metadata: one table helper and one preview helper.

Dagster-free; ``assets/meta.py`` wraps these in ``MetadataValue`` objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if value == value else "nan"
    elif value is None:
        text = ""
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def md_table(rows: Iterable[Sequence[Any]], head: Sequence[str], *, align: str | None = None,
             digits: int = 4) -> str:
    """A GitHub-style table. ``align`` is one character per column (``l``, ``r`` or ``c``); floats are
    rounded to ``digits`` places; ``|`` and newlines inside cells are escaped."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    spec = align or "l" * len(head)
    if len(spec) != len(head):
        raise ValueError(f"align has {len(spec)} columns, head has {len(head)}")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(marks[a] for a in spec) + "|"]
    for row in rows:
        cells = list(row)
        if len(cells) != len(head):
            raise ValueError(f"row has {len(cells)} cells, head has {len(head)}: {cells!r}")
        lines.append("| " + " | ".join(_cell(c, digits) for c in cells) + " |")
    return "\n".join(lines)


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


def text_block(text: str | None, limit: int = 1200) -> str:
    """A fenced block that keeps line breaks (poems, prompts, replies) in rendered markdown."""
    body = clip(text, limit).replace("```", "``\u200b`")
    return f"```text\n{body}\n```"


def chat_preview(examples: Sequence[dict], n: int = 2, limit: int = 600) -> str:
    """The first ``n`` ChatML examples as markdown, each turn under its role with line breaks kept."""
    parts = []
    for index, example in enumerate(examples[:n], 1):
        turns = [f"**{m.get('role', '?')}**\n\n{text_block(m.get('content'), limit)}"
                 for m in example.get("messages", [])]
        parts.append(f"#### example {index}\n\n" + "\n\n".join(turns))
    return "\n\n".join(parts)
