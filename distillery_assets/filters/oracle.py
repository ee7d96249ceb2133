"""The oracle: an LLM scores each prefiltered document on the filter's dimensions (one LLM task).

* :func:`compress` — at most ``max_words`` words (default 800): the first 70% of them, a marker line,
  the last 30%; the text between words is kept as it was (paragraphs survive).
* :func:`verdict_model` — the response format, a pydantic model built from the dimensions: one integer
  (or number) field per dimension bounded by the scale, plus ``content_type`` (one of the cap names or
  ``other``) when the filter has content-type caps. Its JSON schema goes with every request, so the client
  checks each reply against it and re-asks (bounded, ``LLMSettings.json_reasks``) before giving up; what
  never matches is a reject ``invalid_json`` naming the reason, never a score.
* :class:`OracleTask` — ``LLMTask`` over document dicts: the ``prompt.md`` template rendered with title,
  source, published date, the compressed text and the dimension list; temperature from the config (0.3);
  ``parse`` re-checks the answer (:func:`scores_from_answer`: a missing dimension, a non-number or a score
  outside the scale is a reject with that reason and the field) and scores it (:mod:`.scoring`).

A record (the ground-truth row, the same shape :mod:`.labels` produces)::

    {"id", "title", "content", "url", "source", "published_date",
     "scores": {dim: float}, "weighted", "overall", "tier", "applied": [...], "content_type",
     "oracle": {"kind": "llm", "provider", "model"}}
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from distillery_assets.filters.config import FilterDefinition, Scoring
from distillery_assets.filters.scoring import score
from distillery_assets.filters.sources import document_text
from distillery_assets.io.hashing import derived_seed
from distillery_assets.llm import ChatMessage, LLMRequest, LLMResult
from distillery_assets.llm.task import LLMTask, Reject

COMPRESSION_MARKER = "[... the middle of the document is left out here ...]"
_WORD = re.compile(r"\S+")


def compress(text: str, max_words: int = 800, head_fraction: float = 0.7) -> str:
    """``text`` unchanged if it has at most ``max_words`` words, else its first ``round(0.7 * max_words)``
    words, :data:`COMPRESSION_MARKER` on a line of its own, and its last ``max_words - head`` words."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if len(spans) <= max_words:
        return text
    head = max(1, min(max_words - 1, round(max_words * head_fraction)))
    tail = max_words - head
    head_text = text[: spans[head - 1][1]]
    tail_text = text[spans[len(spans) - tail][0]:]
    return f"{head_text}\n\n{COMPRESSION_MARKER}\n\n{tail_text}"


def word_count(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))


def verdict_model(definition: FilterDefinition) -> type[BaseModel]:
    """The oracle's response format for this filter version."""
    s = definition.config.scoring
    kind: Any = int if s.integer_scores else float
    lo, hi = (math.ceil(s.min_score), math.floor(s.max_score)) if s.integer_scores else (s.min_score, s.max_score)
    fields: dict[str, Any] = {
        dim: (kind, Field(ge=lo, le=hi, description=d.description))
        for dim, d in s.dimensions.items()
    }
    if s.content_type_caps:
        fields["content_type"] = (Literal[tuple([*s.content_type_caps, "other"])],  # type: ignore[misc]
                                  Field(description="the kind of document"))
    model_name = "Verdict_" + re.sub(r"\W", "_", f"{definition.name}_v{definition.version}")
    return create_model(model_name, __config__=ConfigDict(extra="ignore"), **fields)


def dimensions_text(scoring: Scoring) -> str:
    return "\n".join(f"- {name} (weight {d.weight:g}): {d.description} Scale: {d.scale}"
                     for name, d in scoring.dimensions.items())


class ScoreError(ValueError):
    """An answer or label that does not give a usable score; ``reason`` and ``field`` say which."""

    def __init__(self, reason: str, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.reason, self.field, self.detail = reason, field, detail


def _number(value: Any) -> float | None:
    if isinstance(value, dict) and "score" in value:  # the seed's {"dim": {"score": n, "reasoning": ...}}
        value = value["score"]
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def scores_from_answer(answer: dict[str, Any], scoring: Scoring, prefix: str = "") -> dict[str, float]:
    """``{dim: float}`` for every dimension, or :class:`ScoreError` (``missing_dimension``,
    ``not_a_number``, ``score_out_of_range``) naming the field (``prefix`` + dimension)."""
    out: dict[str, float] = {}
    for dim in scoring.dimensions:
        where = f"{prefix}{dim}"
        if dim not in answer:
            raise ScoreError("missing_dimension", where, f"dimension {dim!r} is missing")
        value = _number(answer[dim])
        if value is None or value != value:  # NaN
            raise ScoreError("not_a_number", where, f"{answer[dim]!r} is not a number")
        if not scoring.min_score <= value <= scoring.max_score:
            raise ScoreError("score_out_of_range", where,
                             f"{value:g} is outside [{scoring.min_score:g}, {scoring.max_score:g}]")
        out[dim] = value
    return out


def ground_truth_record(doc: dict[str, Any], scores: dict[str, float], scoring: Scoring, *,
                        content_type: str | None, oracle: dict[str, Any]) -> dict[str, Any]:
    result = score(scores, scoring, text=document_text(doc), content_type=content_type)
    return {
        "id": str(doc["id"]), "title": doc.get("title") or "", "content": doc.get("content") or "",
        "url": doc.get("url") or "", "source": doc.get("source") or "",
        "published_date": doc.get("published_date") or "",
        "scores": result.scores, "weighted": result.weighted, "overall": result.overall, "tier": result.tier,
        "applied": result.applied, "content_type": content_type, "oracle": oracle,
    }


def _json_object(text: str | None) -> dict | None:
    if not text:
        return None
    for candidate in (text.strip(), text[text.find("{"): text.rfind("}") + 1] if "{" in text else ""):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


class OracleTask(LLMTask[dict]):
    """One document dict in (``id``, ``title``, ``content``, ...); a ground-truth record or a Reject out."""

    ordered = False

    def __init__(self, definition: FilterDefinition, *, model: str | None = None, tag: str | None = None):
        if definition.prompt is None:
            raise ValueError(f"{definition.folder / 'prompt.md'}: not found; asking an oracle needs the filter's "
                             "prompt (a labels-mode version may leave it out only while no oracle is asked)")
        self.definition = definition
        o = definition.config.oracle
        self.model = model if model is not None else o.model
        self.temperature, self.max_tokens = o.temperature, o.max_tokens
        self.max_words, self.head_fraction = o.max_words, o.head_fraction
        self.name = tag or f"filter_oracle/{definition.name}.v{definition.version}"
        self.response_format = verdict_model(definition)  # instance attribute: one model per filter version
        self._dimensions = dimensions_text(definition.config.scoring)

    def key(self, row: dict) -> str:
        return str(row["id"])

    def render(self, row: dict) -> str:
        return self.definition.prompt.render(
            title=row.get("title") or "(untitled)", source=row.get("source") or "unknown",
            published_date=row.get("published_date") or "unknown",
            text=compress(row.get("content") or "", self.max_words, self.head_fraction),
            dimensions=self._dimensions)

    def prompt(self, row: dict) -> LLMRequest:
        return LLMRequest(messages=[ChatMessage(role="user", content=self.render(row))],
                          temperature=self.temperature, max_tokens=self.max_tokens, model=self.model,
                          seed=derived_seed(self.definition.name, self.definition.version, row["id"]), tag=self.name)

    def parse(self, row: dict, result: LLMResult) -> dict | Reject:
        key = self.key(row)
        answer = result.parsed if isinstance(getattr(result, "parsed", None), dict) else _json_object(result.text)
        if answer is None:
            return Reject(key, "invalid_json", f"the reply is not a JSON object: {(result.text or '')[:200]!r}")
        scoring = self.definition.config.scoring
        try:
            scores = scores_from_answer(answer, scoring)
        except ScoreError as exc:
            return Reject(key, exc.reason, str(exc))
        content_type = answer.get("content_type") if scoring.content_type_caps else None
        if content_type is not None and content_type not in (*scoring.content_type_caps, "other"):
            return Reject(key, "unknown_content_type", f"content_type: {content_type!r}")
        oracle = {"kind": "llm", "provider": getattr(result, "provider", None), "model": getattr(result, "model", None)}
        return ground_truth_record(row, scores, scoring, content_type=content_type, oracle=oracle)
