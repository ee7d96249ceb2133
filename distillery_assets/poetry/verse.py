"""Is a draft verse, or prose (often prose *about* a poem)? One simple rule, used by the verse benchmark
(``benchmarks/poet_verse.py``) and shown in the tutor session.

A draft is verse when all of these hold:

1. it has at least ``MIN_LINES`` (4) non-empty lines;
2. at least 75% of those lines are at most ``MAX_LINE_CHARS`` (60) characters: verse is cut into short
   lines, a paragraph is not;
3. no line is longer than ``PARAGRAPH_CHARS`` (120) characters;
4. at least half its lines are distinct (a model looping on one line has not written a poem);
5. it does not talk about the poem instead of being one: no "this poem", "the poem", "the poet",
   "the brief", "my piece", "poem explores" and the like.

The rule is deliberately plain; it counts shape and meta-talk, not quality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_LINES = 4
MAX_LINE_CHARS = 60
SHORT_FRACTION = 0.75
PARAGRAPH_CHARS = 120
MIN_DISTINCT_FRACTION = 0.5
META_TALK = re.compile(
    r"\b(?:this|the|my|your) (?:poem|poet|brief|piece)s?\b|\bpoem (?:is|was|explores|uses|captures)\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class VerseVerdict:
    verse: bool
    reason: str
    lines: int


def verse_verdict(text: str) -> VerseVerdict:
    """Whether ``text`` is verse by the module's rule, and why not when it is not."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    n = len(lines)
    if n < MIN_LINES:
        return VerseVerdict(False, f"{n} line(s), fewer than {MIN_LINES}", n)
    longest = max(len(line) for line in lines)
    if longest > PARAGRAPH_CHARS:
        return VerseVerdict(False, f"a {longest}-character line reads as a paragraph", n)
    short = sum(1 for line in lines if len(line) <= MAX_LINE_CHARS)
    if short < SHORT_FRACTION * n:
        return VerseVerdict(False, f"only {short} of {n} lines are {MAX_LINE_CHARS} characters or fewer", n)
    distinct = len({line.lower() for line in lines})
    if distinct < MIN_DISTINCT_FRACTION * n:
        return VerseVerdict(False, f"only {distinct} distinct lines of {n} (looping)", n)
    meta = META_TALK.search(text)
    if meta:
        return VerseVerdict(False, f"talks about the poem ({meta.group(0)!r})", n)
    return VerseVerdict(True, f"{n} short lines", n)
