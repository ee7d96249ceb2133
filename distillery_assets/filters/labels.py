"""``oracle: labels``: ground truth from a JSONL file of existing labels (human, or an earlier run), and
the agreement between two sets of labels.

A label line is a JSON object with ``id`` and the dimension scores, in any of these shapes::

    {"id": "a1", "scores": {"depth": 7, "clarity": 5, ...}}                     (this platform's records)
    {"id": "a1", "labels": {"depth": 7, "clarity": 5, ...}}                     (the same, named labels)
    {"id": "a1", "depth": 7, "clarity": 5, ...}                                 (flat, as the seed's oracle)
    {"id": "a1", "<filter>_analysis": {"dimensions": {"depth": {"score": 7}}}}  (the seed's stored analysis)

optionally with ``title``, ``content``, ``url``, ``source``, ``published_date`` and ``content_type``.
A line that is not JSON, has no ``id``, repeats an id, misses a dimension (the reject lists the accepted
shapes) or has a score that is not a number or outside the scale is one reject naming ``file:line:field``;
the other lines proceed. In a filter's ground truth the labels are joined to the version's documents: a
label whose document the prefilter blocked, or that names no document, is a reject too.
:func:`read_labels` returns records shaped as the oracle's (see :mod:`.oracle`), with the overall score,
tier and caps recomputed from the config (content from the label line, else from ``documents``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distillery_assets.filters.config import FilterDefinition
from distillery_assets.filters.oracle import ScoreError, ground_truth_record, scores_from_answer
from distillery_assets.io import JsonlError, iter_jsonl


@dataclass(frozen=True)
class LabelReject:
    key: str  # the id, or "line <n>" when the line has none
    reason: str
    where: str  # "<file>:<line>:<field>"
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


def accepted_shapes(definition: FilterDefinition) -> str:
    """The label-line shapes :func:`read_labels` takes, spelled with this filter's first dimension."""
    d = definition.dimensions[0]
    return (f'accepted shapes: {{"id": ..., "scores": {{"{d}": 7, ...}}}}, {{"id": ..., "labels": {{"{d}": 7, ...}}}}, '
            f'{{"id": ..., "{d}": 7, ...}} (flat) or {{"id": ..., "{definition.name}_analysis": {{"dimensions": '
            f'{{"{d}": {{"score": 7}}}}}}}}; dimensions: {", ".join(definition.dimensions)}')


def _scores_of(row: dict, definition: FilterDefinition) -> tuple[dict, str]:
    for key in ("scores", "labels"):
        if isinstance(row.get(key), dict):
            return row[key], f"{key}."
    analysis = row.get(f"{definition.name}_analysis")
    if isinstance(analysis, dict):
        if isinstance(analysis.get("dimensions"), dict):
            return analysis["dimensions"], f"{definition.name}_analysis.dimensions."
        return analysis, f"{definition.name}_analysis."
    return row, ""


def read_labels(path: Path, definition: FilterDefinition, documents: Mapping[str, dict] | None = None, *,
                join: bool = False, blocked: Mapping[str, str] | None = None) -> tuple[list[dict], list[LabelReject]]:
    """Records and rejects from a labels JSONL (see the module docstring). With ``join`` every label must name
    one of ``documents`` (the version's documents the prefilter passed): a label whose document the prefilter
    blocked (``blocked``: id -> the rule's reason) is a ``blocked_by_prefilter`` reject, one without a document
    a ``no_document`` reject; a record whose content is empty is an ``empty_content`` reject, joined or not."""
    path = Path(path)
    scoring = definition.config.scoring
    records: list[dict] = []
    rejects: list[LabelReject] = []
    seen: set[str] = set()
    documents = documents or {}
    for number, row in iter_jsonl(path, on_error="yield"):
        if isinstance(row, JsonlError):
            rejects.append(LabelReject(f"line {number}", "malformed_line", f"{path}:{number}", row.reason))
            continue
        if row.get("id") in (None, ""):
            rejects.append(LabelReject(f"line {number}", "missing_id", f"{path}:{number}:id", "no 'id'"))
            continue
        key = str(row["id"])
        if key in seen:
            rejects.append(LabelReject(key, "duplicate_id", f"{path}:{number}:id", f"{key!r} seen before"))
            continue
        answer, prefix = _scores_of(row, definition)
        try:
            scores = scores_from_answer(answer, scoring, prefix=prefix)
        except ScoreError as exc:
            hint = f"; {accepted_shapes(definition)}" if exc.reason == "missing_dimension" else ""
            rejects.append(LabelReject(key, exc.reason, f"{path}:{number}:{exc.field}", exc.detail + hint))
            continue
        content_type = row.get("content_type") if scoring.content_type_caps else None
        if content_type is not None and content_type not in (*scoring.content_type_caps, "other"):
            rejects.append(LabelReject(key, "unknown_content_type", f"{path}:{number}:content_type",
                                       repr(content_type)))
            continue
        if join and key not in documents:
            if key in (blocked or {}):
                rejects.append(LabelReject(key, "blocked_by_prefilter", f"{path}:{number}:id",
                                           f"the prefilter blocked document {key!r} ({blocked[key]})"))
            else:
                rejects.append(LabelReject(key, "no_document", f"{path}:{number}:id",
                                           f"no document {key!r} among the version's sources "
                                           f"({len(documents) + len(blocked or {})} documents)"))
            continue
        seen.add(key)
        doc = {**documents.get(key, {}), **{k: row[k] for k in ("title", "content", "url", "source",
                                                                  "published_date") if k in row}, "id": key}
        if not str(doc.get("content") or "").strip():
            rejects.append(LabelReject(key, "empty_content", f"{path}:{number}:content",
                                       "neither the label line nor a document gives this id any content"))
            continue
        oracle = {"kind": "labels", "file": str(path), "line": number, **({"labeller": row["labeller"]}
                                                                          if "labeller" in row else {})}
        records.append(ground_truth_record(doc, scores, scoring, content_type=content_type, oracle=oracle))
    return records, rejects


# ------------------------------------------------------------------------------------------- agreement

def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson's r, or None when either side is constant (or fewer than two pairs)."""
    n = len(a)
    if n < 2:
        return None
    ma, mb = sum(a) / n, sum(b) / n
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return None
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / math.sqrt(va * vb)


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    return pearson(_ranks(a), _ranks(b))


def _scores_by_id(labels: Sequence[dict] | Mapping[str, Mapping[str, float]]) -> dict[str, Mapping[str, float]]:
    if isinstance(labels, Mapping):
        return dict(labels)
    return {str(r["id"]): r["scores"] for r in labels}


def agreement(labels_a: Sequence[dict] | Mapping[str, Mapping[str, float]],
              labels_b: Sequence[dict] | Mapping[str, Mapping[str, float]],
              dims: Sequence[str]) -> dict[str, Any]:
    """Per-dimension Pearson and Spearman correlation and mean absolute error between two oracles on the
    documents both labelled (records with ``id`` and ``scores``, or ``{id: {dim: score}}``); also the
    overall means. A correlation is None where one side is constant (it is undefined there)."""
    a, b = _scores_by_id(labels_a), _scores_by_id(labels_b)
    common = sorted(set(a) & set(b))
    per_dim: dict[str, dict[str, Any]] = {}
    for dim in dims:
        xs = [float(a[i][dim]) for i in common]
        ys = [float(b[i][dim]) for i in common]
        r, rho = pearson(xs, ys), spearman(xs, ys)
        per_dim[dim] = {
            "pearson": None if r is None else round(r, 4),
            "spearman": None if rho is None else round(rho, 4),
            "mae": round(sum(abs(x - y) for x, y in zip(xs, ys)) / len(xs), 4) if xs else None,
            "mean_a": round(sum(xs) / len(xs), 4) if xs else None,
            "mean_b": round(sum(ys) / len(ys), 4) if ys else None,
        }
    defined = [v["pearson"] for v in per_dim.values() if v["pearson"] is not None]
    maes = [v["mae"] for v in per_dim.values() if v["mae"] is not None]
    return {"n": len(common), "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a)),
            "dimensions": per_dim,
            "mean_pearson": round(sum(defined) / len(defined), 4) if defined else None,
            "mean_mae": round(sum(maes) / len(maes), 4) if maes else None}
