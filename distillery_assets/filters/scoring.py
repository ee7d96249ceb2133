"""From per-dimension scores to overall score and tier, as the seed's post-processing does it.

1. ``weighted`` = sum of score x weight over the dimensions;
2. content-type caps: a cap applies when the oracle's ``content_type`` names it, or one of its trigger
   phrases occurs in title+content (whole words, case-insensitive) and none of its exception phrases does;
   with a ``condition`` it applies only while that dimension scores below ``below``. The overall is the
   minimum of the weighted score and every applying cap's ``max_score``;
3. gatekeepers: a dimension flagged ``gatekeeper`` that scores below its ``gatekeeper_threshold`` caps the
   overall at ``gatekeeper_max_score`` unless its exception holds (the exception dimension at or above its
   threshold, and the gated dimension at or above ``min_gated_score`` when given); each
   ``gatekeeper_rules`` entry does the same with ``threshold`` / ``max_overall_if_below``;
4. tier: the first tier, by descending threshold, whose threshold the overall reaches.

``applied`` records every cap and gate that lowered (or bounded) the score, as ``cap:<name>`` /
``gatekeeper:<dimension>``, so a reader sees why a document scored as it did.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from distillery_assets.filters.config import Scoring


@dataclass(frozen=True)
class ScoreResult:
    scores: dict[str, float]
    weighted: float
    overall: float
    tier: str
    applied: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=256)
def _phrase(words: tuple[str, ...]) -> re.Pattern | None:
    words = tuple(w.strip() for w in words if w.strip())
    if not words:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
                      + r")(?!\w)", re.IGNORECASE)


def tier_for(overall: float, scoring: Scoring) -> str:
    for name, tier in scoring.tiers_descending():
        if overall >= tier.threshold - 1e-9:
            return name
    return scoring.tiers_descending()[-1][0]  # unreachable: config validation puts a tier at min_score


def caps_applying(scores: dict[str, float], scoring: Scoring, text: str = "", content_type: str | None = None
                  ) -> list[tuple[str, float]]:
    out = []
    for name, cap in scoring.content_type_caps.items():
        by_type = content_type is not None and content_type == name
        trig = _phrase(tuple(cap.triggers))
        by_trigger = bool(text) and trig is not None and trig.search(text) is not None
        if by_trigger and not by_type:
            exc = _phrase(tuple(cap.exceptions))
            if exc is not None and exc.search(text):
                by_trigger = False
        if not (by_type or by_trigger):
            continue
        if cap.condition is not None and not scores[cap.condition.dimension] < cap.condition.below:
            continue
        out.append((name, cap.max_score))
    return out


def gates_closing(scores: dict[str, float], scoring: Scoring) -> list[tuple[str, float]]:
    out = []
    for name, dim in scoring.dimensions.items():
        if not dim.gatekeeper or not scores[name] < dim.gatekeeper_threshold:
            continue
        exc = dim.gatekeeper_exception
        if exc is not None and scores[exc.dimension] >= exc.threshold and (
                exc.min_gated_score is None or scores[name] >= exc.min_gated_score):
            continue
        out.append((name, dim.gatekeeper_max_score))
    for name, rule in scoring.gatekeeper_rules.items():
        if scores[name] < rule.threshold:
            out.append((name, rule.max_overall_if_below))
    return out


def score(scores: dict[str, float], scoring: Scoring, *, text: str = "", content_type: str | None = None
          ) -> ScoreResult:
    """The overall score and tier of one document's dimension scores (every dimension must be present)."""
    missing = [d for d in scoring.dimensions if d not in scores]
    if missing:
        raise KeyError(f"missing dimension(s) {missing}")
    vals = {d: float(scores[d]) for d in scoring.dimensions}
    weighted = sum(vals[d] * dim.weight for d, dim in scoring.dimensions.items())
    overall = weighted
    applied: list[str] = []
    for name, cap in caps_applying(vals, scoring, text, content_type):
        applied.append(f"cap:{name}")
        overall = min(overall, cap)
    for name, cap in gates_closing(vals, scoring):
        applied.append(f"gatekeeper:{name}")
        overall = min(overall, cap)
    overall = round(max(scoring.min_score, min(scoring.max_score, overall)), 4)
    return ScoreResult(vals, round(weighted, 4), overall, tier_for(overall, scoring), applied)


def tier_index(tier: str, scoring: Scoring) -> int:
    """0 for the highest tier, 1 for the next, ... (for tier accuracy and stratification)."""
    return [n for n, _ in scoring.tiers_descending()].index(tier)
