"""Word counts and the prose checks behind the corpus asset checks.

A ``.corpus`` file must be non-empty UTF-8 text (errors); markdown headings, assistant-style meta commentary
("Here is ...") and word counts outside the prompt's target range are reported as warnings.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

_TARGET = re.compile(r"^(\d+)-(\d+)$")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+\S", re.MULTILINE)
# Openings and closings that are the model talking about the text rather than the text itself.
_META = re.compile(
    r"^\s*(here(?:'s| is| are)\b|sure[,!.]|certainly[,!.]|of course[,!.]|as an ai\b|"
    r"i hope (?:you|this)\b|below is\b|let me know\b|note:)",
    re.IGNORECASE | re.MULTILINE,
)


def word_count(text: str) -> int:
    return len(text.split())


def parse_word_target(target: str) -> tuple[int, int]:
    match = _TARGET.match(target.strip())
    if not match:
        raise ValueError(f"word target {target!r} must look like '200-400'")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warn"
    code: str  # "encoding" | "empty" | "heading" | "meta" | "word_count"
    message: str


def inspect_corpus(data: bytes, word_target: str | None = None) -> tuple[int, list[Finding]]:
    """Check one ``.corpus`` file's bytes; returns its word count and what is wrong with it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return 0, [Finding("error", "encoding", f"not UTF-8 ({exc.reason} at byte {exc.start})")]
    if not text.strip():
        return 0, [Finding("error", "empty", "empty")]
    findings = []
    words = word_count(text)
    if _HEADING.search(text):
        findings.append(Finding("warn", "heading", "markdown heading"))
    lines = [line for line in text.strip().splitlines() if line.strip()]
    edges = "\n".join(lines[:1] + lines[-1:])
    meta = _META.search(edges)
    if meta:
        findings.append(Finding("warn", "meta", f"meta commentary ({meta.group(1).strip()!r})"))
    if word_target:
        low, high = parse_word_target(word_target)
        if not low <= words <= high:
            findings.append(Finding("warn", "word_count", f"{words} words, target {word_target}"))
    return words, findings


def word_stats(counts: list[int], word_target: str | None = None) -> dict:
    """min / median / max of the word counts, and how many fall below, inside and above the target."""
    if not counts:
        return {"files": 0}
    stats = {
        "files": len(counts),
        "min": min(counts),
        "median": statistics.median(counts),
        "max": max(counts),
    }
    if word_target:
        low, high = parse_word_target(word_target)
        stats.update(
            target=word_target,
            below=sum(c < low for c in counts),
            within=sum(low <= c <= high for c in counts),
            above=sum(c > high for c in counts),
        )
    return stats
