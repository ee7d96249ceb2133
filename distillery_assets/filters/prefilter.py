"""The rule-based prefilter: ``prefilter.yaml``'s rules applied in order to each (cleaned) document.

The first rule that decides wins: a blocking rule that fires blocks with its ``reason``; a
``pass_keywords`` rule that fires passes at once with its ``reason``; a document no rule decides passes with
reason ``passed``. Rule kinds (see :mod:`distillery_assets.filters.config`):

* ``min_length`` — content shorter than ``chars`` characters;
* ``excluded_domains`` — the url's host is a listed domain or a subdomain of one (no url: not fired);
* ``block_keywords`` — at least ``min_hits`` distinct keywords, whole words, case-insensitive, in title+content;
* ``pass_keywords`` — any keyword present: passes without asking later rules;
* ``regex`` — any pattern matches title+content (case-insensitive) and no exception pattern does;
* ``theme_keywords`` — the theme pipeline's keyword filter itself (``distillery_assets.theme.keywords``,
  the same keyword file and counting rule as ``theme_chunks``) on the content: blocks below ``min_matches``.

``Prefilter.run(docs)`` returns one :class:`Decision` per document (in order) and ``summarize`` the pass
rate, by-reason counts and the config's expected rate.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from distillery_assets.filters.config import (
    BlockKeywordsRule,
    DomainsRule,
    MinLengthRule,
    PassKeywordsRule,
    PrefilterRules,
    RegexRule,
    ThemeKeywordsRule,
    theme_keywords_path,
)
from distillery_assets.filters.sources import document_text

PASSED = "passed"


@dataclass(frozen=True)
class Decision:
    id: str
    passed: bool
    reason: str
    rule: int | None = None  # index in prefilter.yaml's rules; None when no rule decided
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _words_regex(words: Sequence[str]) -> re.Pattern:
    alternatives = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in alternatives) + r")(?!\w)", re.IGNORECASE)


def host_of(url: str) -> str:
    if not url:
        return ""
    parts = urlsplit(url if "//" in url else "//" + url)
    return (parts.hostname or "").lower().removeprefix("www.")


class _Compiled:
    def __init__(self, index: int, rule: Any):
        self.index, self.rule = index, rule
        if isinstance(rule, (BlockKeywordsRule, PassKeywordsRule)):
            self.words = _words_regex(rule.keywords)
        elif isinstance(rule, RegexRule):
            self.patterns = [re.compile(p, re.IGNORECASE) for p in rule.patterns]
            self.exceptions = [re.compile(p, re.IGNORECASE) for p in rule.exceptions]
        elif isinstance(rule, DomainsRule):
            self.domains = [d.lower().removeprefix("www.").strip(".") for d in rule.domains]
        elif isinstance(rule, ThemeKeywordsRule):
            from distillery_assets.theme.keywords import KeywordCounter, load_keyword_sets

            self.counter = KeywordCounter(load_keyword_sets(theme_keywords_path(rule)))

    def fires(self, doc: dict, text: str, theme_total: int | None) -> tuple[bool, str]:
        rule = self.rule
        if isinstance(rule, MinLengthRule):
            n = len(doc.get("content") or "")
            return n < rule.chars, f"{n} chars < {rule.chars}"
        if isinstance(rule, DomainsRule):
            host = host_of(doc.get("url") or "")
            hit = next((d for d in self.domains if host == d or host.endswith("." + d)), None)
            return hit is not None, f"host {host}"
        if isinstance(rule, (BlockKeywordsRule, PassKeywordsRule)):
            hits = sorted({m.group(0).lower() for m in self.words.finditer(text)})
            need = rule.min_hits if isinstance(rule, BlockKeywordsRule) else 1
            return len(hits) >= need, ", ".join(hits[:5])
        if isinstance(rule, RegexRule):
            hit = next((p.pattern for p in self.patterns if p.search(text)), None)
            if hit is None:
                return False, ""
            exc = next((p.pattern for p in self.exceptions if p.search(text)), None)
            return exc is None, f"matched {hit!r}"
        if isinstance(rule, ThemeKeywordsRule):
            assert theme_total is not None
            return theme_total < rule.min_matches, f"keyword total {theme_total} < {rule.min_matches}"
        raise TypeError(f"unknown rule {rule!r}")


@dataclass
class PrefilterSummary:
    total: int = 0
    passed: int = 0
    blocked: int = 0
    by_reason: Counter = field(default_factory=Counter)
    expected_pass_rate: float | None = None

    @property
    def pass_rate(self) -> float:
        return round(self.passed / self.total, 4) if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "passed": self.passed, "blocked": self.blocked, "pass_rate": self.pass_rate,
                "expected_pass_rate": self.expected_pass_rate,
                "pass_rate_minus_expected": (None if self.expected_pass_rate is None
                                             else round(self.pass_rate - self.expected_pass_rate, 4)),
                "by_reason": dict(self.by_reason.most_common())}


class Prefilter:
    def __init__(self, rules: PrefilterRules, enabled: bool = True):
        self.rules = rules
        self.enabled = enabled
        self._compiled = [_Compiled(i, r) for i, r in enumerate(rules.rules)] if enabled else []

    def run(self, docs: Sequence[dict]) -> list[Decision]:
        theme_totals: dict[int, list[int]] = {}
        for c in self._compiled:
            if isinstance(c.rule, ThemeKeywordsRule):
                theme_totals[c.index] = [row["total"] for row in c.counter.count_many(
                    [d.get("content") or "" for d in docs])]
        out = []
        for n, doc in enumerate(docs):
            out.append(self._decide(doc, document_text(doc), {i: t[n] for i, t in theme_totals.items()}))
        return out

    def decide(self, doc: dict) -> Decision:
        return self.run([doc])[0]

    def _decide(self, doc: dict, text: str, theme_totals: dict[int, int]) -> Decision:
        doc_id = str(doc.get("id"))
        for c in self._compiled:
            fired, detail = c.fires(doc, text, theme_totals.get(c.index))
            if fired:
                passed = isinstance(c.rule, PassKeywordsRule)
                return Decision(doc_id, passed, c.rule.reason, c.index, detail)
        return Decision(doc_id, True, PASSED, None, "")

    @staticmethod
    def summarize(decisions: Sequence[Decision], expected_pass_rate: float | None = None) -> PrefilterSummary:
        s = PrefilterSummary(expected_pass_rate=expected_pass_rate)
        for d in decisions:
            s.total += 1
            s.passed += d.passed
            s.blocked += not d.passed
            s.by_reason[d.reason] += 1
        return s
