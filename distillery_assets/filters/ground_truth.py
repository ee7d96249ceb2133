"""The steps from sources to labelled ground truth, each one call for an asset to make (Dagster-free).

    cands = candidates(definition, locate)                 # sources -> cleaned documents (+ source rejects)
    pre = prefilter(definition, cands.documents)           # pass/block per document with its rule
    gt = label(definition, pre.passed, client, journal=p)  # oracle (mode llm) or labels file (mode labels)
    agr = oracle_agreement(definition, gt.records, client_b, model=m)  # a second oracle on the labels

Every function returns plain data (documents, decisions, records, rejects, summaries); writing files is
the caller's (``atomic_write_jsonl``), so nothing partial reaches disk. Rejects of the oracle are
``{"key", "reason", "detail"}``, failures ``{"key", "reason"}`` (asked again next run, never a score).

Whatever a labelling run's outcome, its :class:`GroundTruth` is what the labels and rejects files describe:
labelling that raised is :meth:`GroundTruth.stopped` (no records, the error); :meth:`GroundTruth.shortfall`
says why a run's labels cannot be used (the asset writes them, then fails).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillery_assets.filters.clean import clean_document
from distillery_assets.filters.config import AssetSource, FilterDefinition
from distillery_assets.filters.labels import agreement, read_labels
from distillery_assets.filters.oracle import OracleTask
from distillery_assets.filters.prefilter import Decision, Prefilter, PrefilterSummary
from distillery_assets.filters.sources import SourceReject, collect, spread
from distillery_assets.llm.task import run_task


@dataclass
class Candidates:
    documents: list[dict]
    rejects: list[SourceReject]
    per_source: dict[str, int]
    emptied_by_cleaning: int = 0  # documents whose content was only markup / invisible characters


def candidates(definition: FilterDefinition, locate: Callable[[AssetSource], Path],
               load_dataset: Callable | None = None) -> Candidates:
    got = collect(definition, locate, load_dataset)
    docs, empty = [], 0
    for doc in got.documents:
        cleaned = clean_document(doc)
        if not cleaned["content"].strip():
            empty += 1
            got.rejects.append(SourceReject(f"document {doc['id']}", "empty_after_cleaning"))
            continue
        docs.append(cleaned)
    return Candidates(docs, got.rejects, got.per_source, empty)


@dataclass
class Prefiltered:
    decisions: list[Decision]
    passed: list[dict]
    summary: PrefilterSummary


def prefilter(definition: FilterDefinition, documents: Sequence[dict]) -> Prefiltered:
    settings = definition.config.prefilter
    pf = Prefilter(definition.prefilter, enabled=settings.enabled)
    decisions = pf.run(documents)
    passed = [doc for doc, d in zip(documents, decisions) if d.passed]
    return Prefiltered(decisions, passed, Prefilter.summarize(decisions, settings.expected_pass_rate))


MIN_RECORDS = 3  # train, val and test need one labelled document each


@dataclass
class GroundTruth:
    records: list[dict]
    rejects: list[dict]
    failures: list[dict] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    selected: int = 0
    seconds: float = 0.0  # how long labelling took (the oracle's time, for its documents/s)
    error: str | None = None  # labelling stopped with this error (then there are no records)

    @classmethod
    def stopped(cls, exc: BaseException, mode: str) -> "GroundTruth":
        """The outcome of a labelling run that raised: no labels, and the error."""
        error = f"{type(exc).__name__}: {exc}"
        return cls([], [], [], {"mode": mode, "records": 0, "error": error}, error=error)

    def shortfall(self) -> str | None:
        """Why these labels cannot be used (the error that stopped labelling, or fewer than
        :data:`MIN_RECORDS`), or None when they can."""
        if self.error is not None:
            return f"labelling stopped: {self.error}"
        if len(self.records) < MIN_RECORDS:
            return (f"only {len(self.records)} labelled documents ({len(self.rejects)} rejects, "
                    f"{len(self.failures)} failures); at least {MIN_RECORDS} are needed for train/val/test")
        return None

    def outcome_rows(self) -> list[dict]:
        """The rows of ``oracle_rejects.jsonl``: the rejects, then the failures, then the error that stopped
        labelling, each with its ``kind`` (``reject``, ``failure``, ``error``)."""
        return ([{**r, "kind": "reject"} for r in self.rejects] + [{**r, "kind": "failure"} for r in self.failures]
                + ([{"key": None, "reason": "labelling_stopped", "detail": self.error, "kind": "error"}]
                   if self.error is not None else []))

    @property
    def mean_overall(self) -> float:
        return round(float(np.mean([r["overall"] for r in self.records])), 3)

    def problems(self, limit: int = 30) -> list[str]:
        """One line per reject and per failure (at most ``limit`` of each), for the run's log."""
        rejects = [f"oracle reject {r.get('key')}: {r.get('reason')} "
                   f"({r.get('where') or ''} {r.get('detail') or ''})".replace("( ", "(").replace(" )", ")")
                   for r in self.rejects[:limit]]
        return rejects + [f"oracle failure {r.get('key')} (asked again next run): {r.get('reason')}"
                          for r in self.failures[:limit]] + ([f"labelling stopped: {self.error}"] if self.error else [])


def select_for_oracle(definition: FilterDefinition, documents: Sequence[dict]) -> list[dict]:
    """The documents the oracle labels: all, or ``oracle.max_documents`` spread evenly over them."""
    return spread(list(documents), definition.config.oracle.max_documents)


def label(definition: FilterDefinition, documents: Sequence[dict], client: Any = None, *,
          journal: Path | None = None, model: str | None = None, log: Callable[[str], None] | None = None,
          blocked: dict[str, str] | None = None) -> GroundTruth:
    """Ground truth for the (prefiltered) documents. ``oracle.mode: llm`` runs :class:`OracleTask` through
    ``client`` (the LLM resource's client; with ``journal`` a rerun asks only what is not finished);
    ``oracle.mode: labels`` reads the labels file joined to ``documents`` (the documents fill in title and
    content; a label whose document the prefilter blocked, ``blocked`` id -> reason, or that names no
    document is a reject)."""
    o = definition.config.oracle
    started = time.perf_counter()
    if o.mode == "labels":
        records, rejects = read_labels(definition.resolve(o.labels), definition,
                                       documents={d["id"]: d for d in documents}, join=True, blocked=blocked)
        return GroundTruth(records, [r.to_dict() for r in rejects], [],
                           {"mode": "labels", "records": len(records), "rejects": len(rejects)}, {}, len(records),
                           time.perf_counter() - started)
    if client is None:
        raise ValueError("oracle mode 'llm' needs an LLM client")
    chosen = select_for_oracle(definition, documents)
    run = run_task(OracleTask(definition, model=model), chosen, client, journal=journal, log=log)
    return GroundTruth(list(run.records), [r.to_dict() for r in run.rejects], [f.to_dict() for f in run.failures],
                       {"mode": "llm", **run.summary()}, run.usage.as_dict(), len(chosen),
                       time.perf_counter() - started)


USAGE_KEYS = ("requests", "cache_hits", "provider_calls", "input_tokens", "output_tokens", "cost_usd")


def accumulate_usage(old: dict[str, Any], usage: dict[str, Any], asked: int, seconds: float,
                     oracle: dict) -> dict[str, Any]:
    """The oracle's usage summed over every materialization (``old``: the previous sum, ``{}`` at first),
    so a rerun answered by the journal adds nothing and the cost per document stays what the labels
    really cost. ``oracle`` (provider, model) falls back to the previous one."""
    total = {k: (old.get("total", {}).get(k, 0) or 0) + (usage.get(k, 0) or 0) for k in USAGE_KEYS}
    total["documents_asked"] = old.get("total", {}).get("documents_asked", 0) + asked
    total["oracle_seconds"] = round(old.get("total", {}).get("oracle_seconds", 0.0) + seconds, 3)
    return {"last_run": usage, "total": total, "oracle": oracle or old.get("oracle") or {}}


def dimension_stats(records: Sequence[dict], dims: Sequence[str]) -> list[tuple[str, float, float, Any, Any]]:
    """Per dimension of the labelled records: (dimension, mean, std, min, max), mean and std to 3 places."""
    return [(d, round(float(np.mean([r["scores"][d] for r in records])), 3),
             round(float(np.std([r["scores"][d] for r in records])), 3),
             min(r["scores"][d] for r in records), max(r["scores"][d] for r in records)) for d in dims]


def oracle_agreement(definition: FilterDefinition, labelled: Sequence[dict], client: Any, *, model: str | None,
                     provider: str | None = None, sample: int | None = None, journal: Path | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The labels' oracle (A: ``labelled``, the ground-truth records as they are) against a second oracle (B:
    ``model`` through ``client``, a client of the provider to compare) on the same evenly spread ``sample``
    (default ``oracle.agreement_sample``): per-dimension Pearson/Spearman and MAE
    (:func:`distillery_assets.filters.labels.agreement`), with B's rejects, failures and usage. With
    ``journal`` a rerun asks B only what it has not answered."""
    docs = spread(list(labelled), sample or definition.config.oracle.agreement_sample)
    task = OracleTask(definition, model=model, tag=f"filter_agreement/{definition.name}.v{definition.version}/b")
    run = run_task(task, docs, client, journal=journal, log=log)
    out = agreement(docs, run.records, definition.dimensions)
    out.update({"compared": True, "sample": len(docs), "oracle_a": next((r["oracle"] for r in docs), {}),
                "oracle_b": {"provider": provider, "model": model}, "rejects_b": len(run.rejects),
                "failures_b": len(run.failures), "usage_b": run.usage.as_dict()})
    return out
