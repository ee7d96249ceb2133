"""Checks on one generated user/assistant exchange; each failure has a short reason code.

Order: shape -> length -> chat-template artefacts -> markdown -> anachronisms -> theme keywords ->
near-duplicate question. The duplicate index only learns questions that passed every other check.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from distillery_assets.theme.keywords import KeywordCounter

TEMPLATE_ARTEFACTS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|", "|>", "[INST]", "[/INST]",
    "<<SYS>>", "<</SYS>>", "<s>", "</s>", "{{", "}}", "\n\n\n",
)
_ROLE_LEAK = re.compile(r"^\s*(?:user|assistant|system|human|ai|question|answer)\s*:", re.I | re.M)
_MARKDOWN = re.compile(
    r"```|`[^`\n]+`|\*\*|__|^\s{0,3}#{1,6}\s|^\s*[-*+]\s+\S|^\s*\d+[.)]\s+\S|\[[^\]\n]+\]\([^)\n]*\)", re.M
)
_TOKEN = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an the of to in on at for and or but is are was were be been do does did what how why when where "
    "which who whom whose that this these those it its we our us you your i me my can could should would "
    "will shall may might must with by from as about into than then so if not no".split()
)


@dataclass(frozen=True)
class ValidatorSettings:
    min_response_chars: int = 50
    max_response_chars: int = 500
    min_theme_keywords: int = 2
    near_duplicate_jaccard: float = 0.8


class AnachronismMatcher:
    """Whole-word, case-insensitive search for any listed term (phrases allowed)."""

    def __init__(self, terms: Iterable[str]):
        terms = sorted({t.strip().lower() for t in terms if t.strip()}, key=len, reverse=True)
        self.terms = terms
        alternation = "|".join(re.escape(t) for t in terms)
        # (?<!\w) / (?!\w) rather than \b so terms that end in punctuation ("a.i.") still match whole
        self._regex = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.I) if terms else None

    def find(self, text: str) -> str | None:
        if self._regex is None:
            return None
        match = self._regex.search(text)
        return match.group(0).lower() if match else None


def normalize_question(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(text.lower()))


class QuestionIndex:
    """Exact and near-duplicate detection of questions (word-set Jaccard, via an inverted index)."""

    def __init__(self, threshold: float = 0.8):
        self.threshold = threshold
        self._exact: set[tuple[str, ...]] = set()
        self._sets: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = defaultdict(list)

    def match(self, question: str) -> str | None:
        """``"duplicate_question"``, ``"near_duplicate_question"`` or ``None``."""
        tokens = normalize_question(question)
        if tokens in self._exact:
            return "duplicate_question"
        words = frozenset(tokens)
        if not words:
            return None
        shared: Counter[int] = Counter()
        for word in words - _STOPWORDS:
            shared.update(self._postings.get(word, ()))
        for idx, _ in shared.most_common():
            other = self._sets[idx]
            if len(words & other) / len(words | other) >= self.threshold:
                return "near_duplicate_question"
        return None

    def add(self, question: str) -> None:
        tokens = normalize_question(question)
        self._exact.add(tokens)
        words = frozenset(tokens)
        idx = len(self._sets)
        self._sets.append(words)
        for word in words - _STOPWORDS:
            self._postings[word].append(idx)


@dataclass
class ExampleValidator:
    keywords: KeywordCounter
    anachronisms: AnachronismMatcher
    settings: ValidatorSettings = field(default_factory=ValidatorSettings)
    questions: QuestionIndex | None = None

    def __post_init__(self):
        if self.questions is None:
            self.questions = QuestionIndex(self.settings.near_duplicate_jaccard)

    def check(self, user: object, assistant: object) -> tuple[str, str] | None:
        """``None`` when the exchange passes, else ``(reason, detail)``. Passing questions are remembered."""
        verdict = self.check_content(user, assistant)
        if verdict:
            return verdict
        user = str(user).strip()
        dup = self.questions.match(user)
        if dup:
            return dup, user[:80]
        self.questions.add(user)
        return None

    def check_content(self, user: object, assistant: object) -> tuple[str, str] | None:
        """Every check but the duplicate-question one (which depends on the examples before it)."""
        if not isinstance(user, str) or not isinstance(assistant, str) or not user.strip() or not assistant.strip():
            return "empty_field", "user or assistant missing or empty"
        user, assistant = user.strip(), assistant.strip()
        s = self.settings
        if len(assistant) < s.min_response_chars:
            return "response_too_short", f"{len(assistant)} < {s.min_response_chars} characters"
        if len(assistant) > s.max_response_chars:
            return "response_too_long", f"{len(assistant)} > {s.max_response_chars} characters"
        both = user + "\n" + assistant
        for token in TEMPLATE_ARTEFACTS:
            if token in both:
                return "chat_template_artifact", repr(token)
        leak = _ROLE_LEAK.search(both)
        if leak:
            return "chat_template_artifact", repr(leak.group(0).strip())
        md = _MARKDOWN.search(both)
        if md:
            return "markdown", repr(md.group(0).strip()[:40])
        term = self.anachronisms.find(both)
        if term:
            return "anachronism", term
        found = self.keywords.distinct_keywords(assistant)
        if len(found) < s.min_theme_keywords:
            return "insufficient_theme_keywords", f"{sorted(found)} < {s.min_theme_keywords} distinct"
        return None
