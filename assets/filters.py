"""Filters (seed 004, "LLM Distillery"): versioned document scorers distilled from LLM labels, one static
partition per filter version folder ``data/filters/<name>/v<N>/`` (key ``<name>.v<N>``, e.g.
``educational_value.v1``; see :mod:`distillery_assets.partitions`).

    filter_candidates -> filter_prefiltered -> filter_ground_truth -> filter_splits -> filter_model
                                                      |                                  |-> filter_report
                                                      '-> filter_oracle_agreement        |-> filter_upload
                                                                                         '-> filter_scores

Thin wiring over :mod:`distillery_assets.filters`; every path comes from
:class:`distillery_assets.filters.paths.FilterPaths` (the seed's layout: the version folder's ``model/``,
``training_history.json``, ``training_metadata.json``; ``reports/``; ``datasets/<name>_ground_truth_v<N>/``
and ``..._splits/``). Each asset writes its files atomically, registers them in the catalogue
(``register_files``) and returns a ``MaterializeResult``.

Where the documents come from (``config.yaml``'s ``sources``), and how the graph shows it:

* ``gutenberg_chunks`` / ``theme_chunks`` (unpartitioned theme assets, one JSONL file each) are real
  Dagster dependencies of ``filter_candidates``: every filter partition depends on the whole upstream
  file (Dagster's mapping from an unpartitioned asset to a partitioned one). The dependencies are the
  union of the assets the versions' configs name, read when the definitions load; a version that names
  only ``gutenberg_chunks`` still shows the ``theme_chunks`` edge if another version reads it (Dagster
  edges are per asset, not per partition). Which sources one partition read, with how many documents,
  is in its ``sources`` metadata table and, file by file, in the catalogue.
* ``story_corpus`` / ``encyclopedia_corpus`` are partitioned by story group and category. A Dagster
  dependency on them (even with ``AllPartitionMapping``) puts them into ``*filter_report``, and one run
  cannot hold assets of two partitions definitions: ``dagster asset materialize --select '*filter_report'
  --partition educational_value.v1`` would be refused. So they are not Dagster edges; the catalogue
  records each ``.corpus`` file read as an input of ``filter_candidates`` with its asset key, so
  ``python -m distillery_assets.catalog lineage filter_model`` reaches them, and a corpus not yet
  generated is a warning with zero documents from that source (never silent: ``missing_sources``).

The oracle (``filter_ground_truth``) goes through the LLM resource with a journal: a re-materialization
asks only what has no finished answer (and the LLM cache answers the rest), so nothing is paid twice.
Each journal line carries the ``request_key`` of its ``llm_calls`` row; the journal is an input of the
labels file, so lineage reaches the oracle calls. Training goes through the compute resource
(``TrainFilterSpec``), batch scoring through its shard runner (in process, or ``.map`` on Modal).
"""


import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from assets.logs import forward_logs
from assets.meta import llm_usage_meta, path_md, records_table, size_mb, table_md
from assets.pools import compute_pool, llm_pool
from distillery_assets.catalog import InputRef
from distillery_assets.filters import ground_truth as gt_lib
from distillery_assets.filters.config import (AssetSource, FilterConfigError, FilterDefinition, HubSource,
                                              load_filter)
from distillery_assets.filters.paths import FilterPaths, filter_versions
from distillery_assets.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from distillery_assets.partitions import filter_version_partitions
from distillery_assets.paths import data_dir
from io_managers.register import register_files
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource
from resources.llm import LLMResource

GROUP = "filters"
PARTITIONS = filter_version_partitions
CHUNK_ASSETS = ("gutenberg_chunks", "theme_chunks")  # unpartitioned: real Dagster dependencies
CORPUS_ASSETS = {"story_corpus": "stories", "encyclopedia_corpus": "encyclopedia"}  # catalogue edges only
CANDIDATE_REJECTS = "candidate_rejects.jsonl"
ORACLE_USAGE = "oracle_usage.json"
TEST_RESULTS = "test_results.json"  # beside training_metadata.json: the test table judged with the filter's rules
EMBED_CACHE = "filters/embeddings"  # relative to data_dir: MiniLM vectors by text hash, shared by every version
FORWARDED_LOGGERS = ("distillery_assets.filters",)
REFERENCE_ORACLE = ("openai", "gpt-4o-mini")  # a priced model for the cost table (same tokens per document)
SCORER_DOLLARS_PER_HOUR = 0.05  # an assumed price of the CPU the scorer runs on, stated in the report


# ----------------------------------------------------------------------------------------- helpers

def _definition(context: dg.AssetExecutionContext) -> tuple[FilterDefinition, FilterPaths]:
    paths = FilterPaths.for_key(context.partition_key)
    try:
        return load_filter(paths.definition), paths
    except FilterConfigError as exc:
        raise dg.Failure(str(exc)) from exc


def _definition_files(defn: FilterDefinition) -> list[Path]:
    return [p for p in (defn.folder / n for n in ("config.yaml", "prefilter.yaml", "prompt.md")) if p.exists()]


def _rel(path: Path) -> str:
    return Path(path).resolve().relative_to(data_dir()).as_posix()


def _require(path: Path, what: str, asset: str) -> Path:
    if not Path(path).exists():
        raise dg.Failure(f"{path}: no {what}; materialize {asset} for this partition first")
    return Path(path)


def _source_assets() -> list[str]:
    """The unpartitioned platform assets any version's config reads (the union; see the module docstring).
    A config that does not load adds nothing here; it fails when its own partition runs."""
    wanted: set[str] = set()
    for version in filter_versions():
        try:
            defn = load_filter(version.folder)
        except FilterConfigError as exc:
            logging.getLogger(__name__).warning("filter %s: %s", version.key, exc)
            continue
        wanted |= {s.asset for s in defn.config.sources if isinstance(s, AssetSource) and s.asset in CHUNK_ASSETS}
    return sorted(wanted)


def _chunk_file(asset: str) -> Path:
    return data_dir() / "theme" / f"{asset}.jsonl"


def _dagster_log(context):
    """The filters library's log lines (training epochs, scoring shards) in the run's log."""
    return forward_logs(context, FORWARDED_LOGGERS)


def _tiers(defn: FilterDefinition) -> list[tuple[str, float]]:
    return [(n, float(t.threshold)) for n, t in defn.config.scoring.tiers_descending()]


def _binary_threshold(defn: FilterDefinition) -> float | None:
    tier = defn.config.training.binary_tier
    return float(defn.config.scoring.tiers[tier].threshold) if tier else None


def _count_table(counts: dict[str, int], head: tuple[str, str]) -> dg.MetadataValue | str:
    return table_md(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), head) if counts else "none"


# ---------------------------------------------------------------------------------------- candidates

def _locator(refs: list[InputRef], *, prefix: str = "", on_empty=None):
    """The sources' ``locate`` (:func:`distillery_assets.filters.sources.collect`): a chunk asset is its theme
    JSONL file, which must exist; a corpus asset is the corpus root, each ``.corpus`` file of its half added
    to ``refs`` (catalogue inputs), and ``on_empty(asset, root)`` called when it has none yet."""
    from distillery_assets.corpus.layout import CORPUS_SUFFIX, corpus_root

    def locate(src: AssetSource) -> Path:
        if src.asset in CORPUS_ASSETS:
            root = corpus_root()
            files = sorted((root / CORPUS_ASSETS[src.asset]).rglob(f"*{CORPUS_SUFFIX}"))
            if not files and on_empty is not None:
                on_empty(src.asset, root)
            refs.extend(InputRef(f, src.asset) for f in files)
            return root
        file = _chunk_file(src.asset)
        if not file.exists():
            raise dg.Failure(f"{prefix}source {src.asset} ({file}) does not exist; materialize it first")
        return file

    return locate


def _source_rows(defn: FilterDefinition, per_source: dict[str, int]) -> list[tuple]:
    """One row per configured source: its label, documents kept, limit, and how the graph shows it."""
    rows = []
    for src in defn.config.sources:
        label = src.asset if isinstance(src, AssetSource) else (
            f"hub:{src.dataset}" if isinstance(src, HubSource) else f"jsonl:{src.path}")
        edge = ("dagster dependency" if isinstance(src, AssetSource) and src.asset in CHUNK_ASSETS else
                "catalogue edges (partitioned upstream)" if isinstance(src, AssetSource) else "file input")
        rows.append((label, per_source.get(label, 0), src.limit, edge))
    return rows


def _candidates_meta(defn: FilterDefinition, paths: FilterPaths, cands, missing: list[str]) -> dict[str, Any]:
    reasons = Counter(r.reason for r in cands.rejects)
    return {
        "documents": len(cands.documents), "rejects": len(cands.rejects),
        "emptied_by_cleaning": cands.emptied_by_cleaning,
        "sources": table_md(_source_rows(defn, cands.per_source), ["source", "documents", "limit", "graph edge"]),
        "missing_sources": dg.MetadataValue.json(missing),
        "reject_reasons": _count_table(dict(reasons), ("reason", "documents")),
        "rejects_sample": table_md([(r.where, r.reason, r.detail) for r in cands.rejects[:20]],
                                   ["where", "reason", "detail"]) if cands.rejects else "none",
        "preview": records_table(cands.documents, ["id", "title", "source", "content"], n=8, limit=160),
        "definition": path_md(paths.definition),
    }


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=_source_assets(), kinds={"python"},
          description="The filter version's documents from its configured sources (platform assets, a JSONL file "
                      "of articles, a streamed Hub dataset), cleaned: unicode NFC, HTML, zero-width and BiDi marks. "
                      "Every dropped document is a reject with its reason.")
def filter_candidates(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    refs: list[InputRef] = []
    missing: list[str] = []

    def on_empty(asset: str, root: Path) -> None:
        missing.append(asset)
        context.log.warning(f"{paths.key}: source {asset} has no .corpus files under {root} yet "
                            f"(materialize its partitions to include them); 0 documents from it")

    try:
        cands = gt_lib.candidates(defn, _locator(refs, prefix=f"{paths.key}: ", on_empty=on_empty))
    except FilterConfigError as exc:
        raise dg.Failure(str(exc)) from exc
    if not cands.documents:
        raise dg.Failure(f"{paths.key}: no documents from the sources {[s.kind for s in defn.config.sources]} "
                         f"(missing: {missing}); rejects: {[str(r) for r in cands.rejects[:5]]}")
    for reject in cands.rejects[:20]:
        context.log.warning(f"source reject: {reject}")
    atomic_write_jsonl(paths.candidates, cands.documents)
    atomic_write_jsonl(paths.ground_truth_dir / CANDIDATE_REJECTS, [r.to_dict() for r in cands.rejects])
    inputs = [*_definition_files(defn), *refs,
              *[defn.resolve(s.path) for s in defn.config.sources if getattr(s, "kind", "") == "jsonl"]]
    meta = register_files(context, catalog.get(), [paths.candidates, paths.ground_truth_dir / CANDIDATE_REJECTS],
                          inputs)
    return dg.MaterializeResult(metadata={**meta, **_candidates_meta(defn, paths, cands, missing)})


# ---------------------------------------------------------------------------------------- prefilter

@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_candidates], kinds={"python"},
          description="prefilter.yaml's rules on each candidate, first deciding rule wins: pass/block with the rule's "
                      "reason; pass rate against the config's expected rate.")
def filter_prefiltered(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    docs = read_jsonl(_require(paths.candidates, "candidates", "filter_candidates"))
    pre = gt_lib.prefilter(defn, docs)
    rows = [{**doc, "prefilter": d.to_dict()} for doc, d in zip(docs, pre.decisions, strict=True)]
    atomic_write_jsonl(paths.prefiltered, rows)
    meta = register_files(context, catalog.get(), [paths.prefiltered], [defn.folder / "prefilter.yaml"])
    s = pre.summary.as_dict()
    blocked = [(d.id, d.reason, d.detail) for d in pre.decisions if not d.passed]
    return dg.MaterializeResult(metadata={
        **meta, "documents": s["total"], "passed": s["passed"], "blocked": s["blocked"],
        "pass_rate": s["pass_rate"], "expected_pass_rate": s["expected_pass_rate"] if s["expected_pass_rate"]
        is not None else "not set", "pass_rate_minus_expected": s["pass_rate_minus_expected"] if
        s["pass_rate_minus_expected"] is not None else "n/a",
        "by_reason": _count_table(s["by_reason"], ("reason", "documents")),
        "blocked_sample": table_md(blocked[:20], ["id", "reason", "detail"]) if blocked else "none",
    })


# ------------------------------------------------------------------------------------- ground truth

def _passed(paths: FilterPaths) -> list[dict]:
    rows = read_jsonl(_require(paths.prefiltered, "prefilter decisions", "filter_prefiltered"))
    return [{k: v for k, v in r.items() if k != "prefilter"} for r in rows if r["prefilter"]["passed"]]


def _usage_totals(path: Path, usage: dict[str, Any], asked: int, seconds: float, oracle: dict) -> dict[str, Any]:
    """Usage summed over every materialization (a rerun answered by the journal adds nothing), so the
    cost per document stays what the labels really cost."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    out = gt_lib.accumulate_usage(old, usage, asked, seconds, oracle)
    atomic_write_text(path, json.dumps(out, indent=2))
    return out


def _log_oracle_problems(context: dg.AssetExecutionContext, gt) -> None:
    for r in gt.rejects[:30]:
        context.log.warning(f"oracle reject {r.get('key')}: {r.get('reason')} "
                            f"({r.get('where') or ''} {r.get('detail') or ''})".replace("( ", "(").replace(" )", ")"))
    for r in gt.failures[:30]:
        context.log.warning(f"oracle failure {r.get('key')} (asked again next run): {r.get('reason')}")


def _register_labels(context: dg.AssetExecutionContext, cat, defn: FilterDefinition,
                     paths: FilterPaths) -> dict[str, Any]:
    """The labels, oracle rejects and usage in the catalogue. In mode llm the journal (one line per answer,
    each with the request_key of its llm_calls row) is registered first and is an input of the labels:
    lineage of anything made from the labels reaches the oracle calls. In mode labels the labels file is."""
    from distillery_assets.catalog import NewArtifact

    inputs: list[Any] = [*_definition_files(defn)]
    items: list[Any] = [paths.oracle_rejects, paths.ground_truth_dir / ORACLE_USAGE]
    if defn.config.oracle.mode == "llm" and paths.oracle_journal.exists():
        register_files(context, cat, [paths.oracle_journal], inputs)
        items.insert(0, NewArtifact(paths.labels, inputs=[InputRef(paths.oracle_journal, "filter_ground_truth")]))
    else:
        items.insert(0, paths.labels)
        inputs.append(defn.resolve(defn.config.oracle.labels))
    return register_files(context, cat, items, inputs)


def _ground_truth_meta(defn: FilterDefinition, paths: FilterPaths, gt, passed: int, usage: dict[str, Any],
                       oracle: dict, seconds: float) -> dict[str, Any]:
    mode = defn.config.oracle.mode
    reasons = Counter(r["reason"] for r in gt.rejects)
    total = usage["total"]
    per_doc = (total["cost_usd"] / total["documents_asked"] * 1000) if total["documents_asked"] else None
    return {
        "mode": mode, "documents_passed": passed, "selected_for_oracle": gt.selected,
        "records": len(gt.records), "rejects": len(gt.rejects), "failures": len(gt.failures),
        "resumed_from_journal": int(gt.summary.get("resumed_from_journal", 0)),
        "reject_reasons": _count_table(dict(reasons), ("reason", "documents")),
        "rejects_sample": table_md([(r.get("key"), r.get("reason"), str(r.get("detail") or r.get("where") or "")[:160])
                                    for r in gt.rejects[:15]], ["id", "reason", "detail"]) if gt.rejects else "none",
        "failures_sample": table_md([(r.get("key"), str(r.get("reason"))[:160]) for r in gt.failures[:15]],
                                    ["id", "reason"]) if gt.failures else "none",
        "tiers": _count_table(dict(Counter(r["tier"] for r in gt.records)), ("tier", "documents")),
        "caps_and_gates_applied": _count_table(dict(Counter(a for r in gt.records for a in r.get("applied") or [])),
                                               ("rule", "documents")),
        "dimensions": table_md(gt_lib.dimension_stats(gt.records, defn.dimensions),
                               ["dimension", "mean", "std", "min", "max"]),
        "mean_overall": round(float(np.mean([r["overall"] for r in gt.records])), 3),
        "oracle": dg.MetadataValue.json(oracle),
        **llm_usage_meta(gt.usage or {}),
        "oracle_seconds": round(seconds, 2),
        "total_oracle_cost_usd": round(float(total["cost_usd"]), 6),
        "oracle_usd_per_1000_documents": round(per_doc, 4) if per_doc is not None else "n/a",
        "journal": path_md(paths.oracle_journal) if mode == "llm" else "labels file",
        "preview": records_table(gt.records, ["id", "tier", "overall", "scores", "applied"], n=8),
    }


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_prefiltered], kinds={"openai"},
          pool=llm_pool(),
          description="The oracle: the LLM resource scores each passed document on the dimensions (JSON schema from the "
                      "config, temperature 0.3, content cut to 800 words 70/30 around a marker, bounded re-asks); a "
                      "reply that is not JSON or misses a dimension is a logged reject, never a score; overall = "
                      "weighted sum, then caps and gatekeepers. Journalled: nothing is paid twice. Or `oracle: "
                      "labels`: an existing labels file.")
def filter_ground_truth(context: dg.AssetExecutionContext, llm: LLMResource,
                        catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    cat = catalog.get()
    docs = _passed(paths)
    mode = defn.config.oracle.mode
    client = llm.get_client(context) if mode == "llm" else None
    started = time.perf_counter()
    try:
        gt = gt_lib.label(defn, docs, client, journal=paths.oracle_journal if mode == "llm" else None,
                          log=context.log.info)
    except FilterConfigError as exc:
        raise dg.Failure(str(exc)) from exc
    seconds = time.perf_counter() - started
    _log_oracle_problems(context, gt)
    if len(gt.records) < 3:
        raise dg.Failure(f"{paths.key}: only {len(gt.records)} labelled documents ({len(gt.rejects)} rejects, "
                         f"{len(gt.failures)} failures); at least 3 are needed for train/val/test")
    atomic_write_jsonl(paths.labels, gt.records)
    atomic_write_jsonl(paths.oracle_rejects, [{**r, "kind": "reject"} for r in gt.rejects]
                       + [{**r, "kind": "failure"} for r in gt.failures])
    oracle = next((r["oracle"] for r in gt.records if r.get("oracle")), {})
    asked = int(gt.usage.get("requests", 0) - gt.usage.get("cache_hits", 0)) if gt.usage else 0
    usage = _usage_totals(paths.ground_truth_dir / ORACLE_USAGE, gt.usage or {}, asked, seconds if asked else 0.0,
                          oracle)
    meta = _register_labels(context, cat, defn, paths)
    return dg.MaterializeResult(metadata={**meta, **_ground_truth_meta(defn, paths, gt, len(docs), usage, oracle,
                                                                        seconds)})


# --------------------------------------------------------------------------------------- agreement

class AgreementConfig(dg.Config):
    """The second oracle: overrides of the LLM resource's settings (empty: ``oracle.agreement_model`` on the
    same provider). Without any second oracle the asset says so and compares nothing."""

    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    sample: int | None = None


def _no_second_oracle(context: dg.AssetExecutionContext, catalog: CatalogResource,
                      paths: FilterPaths) -> dg.MaterializeResult:
    atomic_write_text(paths.agreement, json.dumps({"compared": False, "reason": "no second oracle"}, indent=2))
    meta = register_files(context, catalog.get(), [paths.agreement], [InputRef(paths.labels, "filter_ground_truth")])
    return dg.MaterializeResult(metadata={
        **meta, "compared": False,
        "reason": "no second oracle configured: set oracle.agreement_model in config.yaml, or this asset's "
                  "provider/base_url/model config"})


def _agreement_meta(out: dict[str, Any], run) -> dict[str, Any]:
    rows = [(d, v["pearson"], v["spearman"], v["mae"], v["mean_a"], v["mean_b"]) for d, v in out["dimensions"].items()]
    return {
        "compared": True, "documents_compared": out["n"], "mean_pearson": out["mean_pearson"] or "undefined",
        "mean_mae": out["mean_mae"] if out["mean_mae"] is not None else "n/a",
        "per_dimension": table_md(rows, ["dimension", "pearson", "spearman", "MAE", "mean A", "mean B"]),
        "oracle_b": dg.MetadataValue.json(out["oracle_b"]), "rejects_b": len(run.rejects),
        **llm_usage_meta(run.usage.as_dict()),
    }


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_ground_truth], kinds={"openai"},
          pool=llm_pool(),
          description="Two oracles on the same sample of labelled documents (the ground truth's, and a second provider "
                      "or model): per-dimension Pearson/Spearman and MAE, so you know whether the labels are worth "
                      "distilling. Journalled like the ground truth.")
def filter_oracle_agreement(context: dg.AssetExecutionContext, config: AgreementConfig, llm: LLMResource,
                            catalog: CatalogResource) -> dg.MaterializeResult:
    from distillery_assets.filters.labels import agreement
    from distillery_assets.filters.oracle import OracleTask
    from distillery_assets.filters.sources import spread
    from distillery_assets.llm.task import run_task

    defn, paths = _definition(context)
    records = read_jsonl(_require(paths.labels, "labels", "filter_ground_truth"))
    overrides = {k: v for k, v in {"provider": config.provider, "base_url": config.base_url,
                                   "api_key_env": config.api_key_env}.items() if v}
    model_b = config.model or defn.config.oracle.agreement_model
    if not overrides and model_b is None:
        return _no_second_oracle(context, catalog, paths)
    settings = llm.settings().model_copy(update={**overrides, "model": model_b})
    second = LLMResource(**settings.model_dump(), catalog=llm.catalog)
    client = second.get_client(context)
    sample = spread(records, config.sample or defn.config.oracle.agreement_sample)
    task = OracleTask(defn, model=model_b, tag=f"filter_agreement/{paths.key}/b")
    journal = paths.ground_truth_dir / "agreement_b.jsonl"
    try:
        run = run_task(task, sample, client, journal=journal, log=context.log.info)
    finally:
        second.teardown_after_execution(None)
    out = agreement(sample, run.records, defn.dimensions)
    out.update({"compared": True, "sample": len(sample), "oracle_a": next((r["oracle"] for r in sample), {}),
                "oracle_b": {"provider": settings.provider, "model": model_b}, "rejects_b": len(run.rejects),
                "failures_b": len(run.failures), "usage_b": run.usage.as_dict()})
    atomic_write_text(paths.agreement, json.dumps(out, indent=2))
    meta = register_files(context, catalog.get(), [paths.agreement, journal] if journal.exists() else [paths.agreement],
                          [InputRef(paths.labels, "filter_ground_truth")])
    return dg.MaterializeResult(metadata={**meta, **_agreement_meta(out, run)})


# ------------------------------------------------------------------------------------------ splits

@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_ground_truth], kinds={"python"},
          description="Train/val/test stratified by tier, 80/10/10, seed 42; split_metadata.json with the seed's legacy "
                      "fields (plus tiers per split and the files' sha256).")
def filter_splits(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    from distillery_assets.filters.splits import SplitError, write_splits

    defn, paths = _definition(context)
    records = read_jsonl(_require(paths.labels, "labels", "filter_ground_truth"))
    try:
        meta_split = write_splits(records, defn, paths.splits_dir)
    except SplitError as exc:
        raise dg.Failure(f"{paths.key}: {exc}") from exc
    meta = register_files(context, catalog.get(), [paths.splits_dir], [InputRef(paths.labels, "filter_ground_truth")])
    tiers = sorted({t for part in meta_split["tiers"].values() for t in part})
    rows = [(name, meta_split[f"{name}_articles"], *[meta_split["tiers"][name].get(t, 0) for t in tiers])
            for name in ("train", "val", "test")]
    return dg.MaterializeResult(metadata={
        **meta, "total": meta_split["total_articles"], "train": meta_split["train_articles"],
        "val": meta_split["val_articles"], "test": meta_split["test_articles"],
        "splits": table_md(rows, ["split", "documents", *tiers]),
        "split_metadata": path_md(paths.split_metadata),
    })


# ------------------------------------------------------------------------------------------- model

def _train_spec(defn: FilterDefinition, paths: FilterPaths):
    from distillery_assets.filters.train import FilterTrainConfig, TrainFilterSpec

    s = defn.config.scoring
    try:
        cfg = FilterTrainConfig(**{"score_min": s.min_score, "score_max": s.max_score,
                                   **defn.config.training.trainer_fields()})
    except ValueError as exc:
        raise dg.Failure(f"{defn.folder / 'config.yaml'}: training: {exc}") from exc
    return TrainFilterSpec(
        config=cfg, filter_name=defn.name, filter_version=defn.config.filter.version,
        dimension_names=defn.dimensions, weights=[s.dimensions[d].weight for d in defn.dimensions],
        tiers=_tiers(defn), threshold=_binary_threshold(defn),
        train=_rel(paths.split_file("train")), val=_rel(paths.split_file("val")), test=_rel(paths.split_file("test")),
        version_dir=_rel(paths.version_dir), embed_cache=EMBED_CACHE)


def _judged(defn: FilterDefinition, paths: FilterPaths, result) -> dict[str, dict[str, Any]]:
    """The test table again with the filter's own rules (caps on the text, gatekeepers), not only the
    weighted sum the training step judges with."""
    from distillery_assets.filters.scoring import score
    from distillery_assets.filters.train import judge_predictions

    by_id = {r["id"]: r for r in read_jsonl(paths.split_file("test"))}
    texts = [f"{by_id[i].get('title') or ''}\n{by_id[i].get('content') or ''}" for i in result.test_predictions.ids]
    dims, scoring = defn.dimensions, defn.config.scoring

    def overall(matrix: np.ndarray) -> np.ndarray:
        return np.asarray([score(dict(zip(dims, map(float, row), strict=True)), scoring, text=texts[i]).overall
                           for i, row in enumerate(np.asarray(matrix))])

    return judge_predictions(result.test_predictions, dims, overall=overall, tiers=_tiers(defn),
                             threshold=_binary_threshold(defn))


def _results_meta(table: dict[str, dict[str, Any]], dims: list[str]) -> dict[str, Any]:
    from distillery_assets.filters.metrics import FINEWEB_EDU_F1, results_markdown

    m, mean, ridge = table["model"], table["mean"], table["ridge"]
    b = m["binary"]
    return {
        "results": dg.MetadataValue.md(results_markdown(table, dims)),
        "test_mae": round(m["mae"], 4), "mean_predictor_test_mae": round(mean["mae"], 4),
        "ridge_test_mae": round(ridge["mae"], 4), "beats_mean_predictor": bool(m["mae"] < mean["mae"]),
        "beats_ridge": bool(m["mae"] < ridge["mae"]),
        "tier_accuracy": round(m["tier_accuracy"], 4),
        "binary_threshold": b["threshold"], "precision": round(b["precision"], 4), "recall": round(b["recall"], 4),
        "f1": round(b["f1"], 4),
        "f1_anchor": f"FineWeb-Edu's distilled classifier: F1 {FINEWEB_EDU_F1} at its educational threshold "
                     f"(~450k Llama-3-70B labels); this scorer: F1 {b['f1']:.2f} at overall >= {b['threshold']:g} on "
                     f"{b['n']} test documents ({b['positives']} positive)",
    }


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_splits], kinds={"pytorch"}, pool=compute_pool(),
          description="The scorer, through the compute resource: offline the shipped all-MiniLM-L6-v2 frozen with cached "
                      "embeddings and a regression head (FineWeb-Edu's recipe; full fine-tune or the seed's Qwen2.5 + "
                      "LoRA recipe by config). Best epoch by val MAE in the version's model/; test table with the mean "
                      "predictor and ridge baselines; one catalogue runs row per trained model.")
def filter_model(context: dg.AssetExecutionContext, compute: ComputeResource,
                 catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    cat = catalog.get()
    _require(paths.split_metadata, "splits", "filter_splits")
    spec = _train_spec(defn, paths)
    context.log.info(f"{paths.key}: training {spec.config.mode} on {spec.config.base_model} ({compute.backend})")
    with _dagster_log(context):
        result = compute.run_step(spec)
    ran_on = compute.ran_on(result.device)
    table = _judged(defn, paths, result)
    atomic_write_text(paths.version_dir / TEST_RESULTS, json.dumps(
        {"rules": "filter rules (caps, gatekeepers)", "results": table,
         "weighted_sum_results": result.test, "ran_on": ran_on}, indent=2))
    if result.reused:
        context.log.info(f"{paths.key}: finished model reused (fingerprint {result.fingerprint}); nothing trained")
    else:
        cat.record_run(kind="train", name="filter_model", partition=paths.key, run_id=context.run_id,
                       params={"filter": defn.name, "version": defn.config.filter.version,
                               "training": spec.config.fingerprint(), "dimensions": defn.dimensions,
                               "splits": {k: getattr(spec, k) for k in ("train", "val", "test")}},
                       metrics={"ran_on": ran_on, "device": result.device, "best_epoch": result.best_epoch,
                                "best_val_mae": result.best_val_mae, "test": table,
                                "train_seconds": result.train_seconds, "fingerprint": result.fingerprint})
    meta = register_files(context, cat, [paths.model_dir, paths.training_history, paths.training_metadata,
                                         paths.version_dir / TEST_RESULTS], [*_definition_files(defn)])
    epochs = [(h["epoch"], round(h["train"]["loss"], 4), round(h["train"]["mae"], 4), round(h["val"]["mae"], 4),
               round(h["val"]["rmse"], 4)) for h in result.history]
    return dg.MaterializeResult(metadata={
        **meta, "ran_on": ran_on, "reused": result.reused, "mode": result.mode, "base_model": result.base_model,
        "best_epoch": result.best_epoch, "best_val_mae": round(result.best_val_mae, 4),
        "train_examples": result.train_examples, "val_examples": result.val_examples,
        "test_examples": result.test_examples, "trainable_parameters": result.num_trainable_parameters,
        "train_seconds": result.train_seconds, **_results_meta(table, defn.dimensions),
        "epochs": table_md(epochs, ["epoch", "train loss", "train MAE", "val MAE", "val RMSE"]),
        "model_dir": path_md(paths.model_dir), "model_mb": size_mb(paths.model_dir),
    })


# ------------------------------------------------------------------------------------------ report

def _train_result(paths: FilterPaths):
    from distillery_assets.filters.train import RESULT_FILE, FilterTrainResult

    file = _require(paths.model_dir / RESULT_FILE, "trained model", "filter_model")
    return FilterTrainResult.model_validate_json(file.read_text(encoding="utf-8"))


def _curves_md(history: list[dict], dims: list[str]) -> dict[str, str]:
    from distillery_assets.plots import BLUE, GREEN, GREY, ORANGE, RED, inline_md

    epochs = [h["epoch"] for h in history]

    def mae(ax):
        ax.plot(epochs, [h["train"]["mae"] for h in history], "-", color=BLUE, lw=1.5)
        ax.plot(epochs, [h["val"]["mae"] for h in history], "-", color=RED, lw=1.5)

    def loss(ax):
        ax.plot(epochs, [h["train"]["loss"] for h in history], "-", color=BLUE, lw=1.5)
        ax.plot(epochs, [h["val"]["loss"] for h in history], "-", color=RED, lw=1.5)

    colours = [BLUE, RED, GREEN, ORANGE, GREY]

    def per_dim(ax):
        for i, d in enumerate(dims[: len(colours)]):
            ax.plot(epochs, [h["val"][f"{d}_mae"] for h in history], "-", color=colours[i], lw=1.2)

    names = ", ".join(f"{d} {c}" for d, c in zip(dims, ("blue", "red", "green", "orange", "grey"), strict=False))
    return {"mae_curves": inline_md(mae, "MAE per epoch: train blue, val red", colours=[BLUE, RED]),
            "loss_curves": inline_md(loss, "MSE loss per epoch: train blue, val red", colours=[BLUE, RED]),
            "per_dimension_val_mae": inline_md(per_dim, f"val MAE per epoch: {names}",
                                               colours=colours[: max(1, min(len(dims), len(colours)))])}


def _scorer_speed(paths: FilterPaths, n: int = 48) -> float | None:
    """Documents/s of the trained scorer on val+test texts (after one warm-up batch), for the cost table."""
    from distillery_assets.filters.score import Scorer
    from distillery_assets.filters.train import example_text

    rows = [*read_jsonl(paths.split_file("val")), *read_jsonl(paths.split_file("test"))]
    texts = [example_text(r) for r in rows][:n] or []
    if not texts:
        return None
    scorer = Scorer(paths.model_dir)
    scorer.predict(texts[:4])
    start = time.perf_counter()
    scorer.predict(texts)
    return round(len(texts) / max(time.perf_counter() - start, 1e-9), 2)


def _report_inputs(defn: FilterDefinition, paths: FilterPaths, *, history: list[dict], metadata: dict,
                   table: dict[str, dict[str, Any]], oracle: dict, costs: list, test_examples: int):
    """What the .docx report says, from the definition, the training outputs and the labels."""
    from distillery_assets.filters.report import ReportInputs

    labels = read_jsonl(paths.labels)
    prefilter_rules = ", ".join(f"{r.kind} ({r.reason})" for r in defn.prefilter.rules)
    return ReportInputs(
        filter_name=defn.name, filter_version=defn.config.filter.version, description=defn.config.filter.description,
        dims=[(d, v.weight, v.description) for d, v in defn.config.scoring.dimensions.items()], tiers=_tiers(defn),
        history=history, metadata=metadata, results=table, plots_dir=paths.plots_dir,
        oracle=(f"{oracle.get('provider')} {oracle.get('model')}" if oracle else
                "the labels file" if defn.config.oracle.mode == "labels" else "the oracle"),
        prefilter=f"Rules in order, the first that decides wins: {prefilter_rules}." if prefilter_rules else "",
        label_counts=dict(Counter(r["tier"] for r in labels)), costs=costs,
        notes=["The test table judges overall and tier with the filter's own rules (caps on the text, gatekeepers); "
               f"predicted scores carry no content type. Test split: {test_examples} documents."])


def _costs_md(costs: list) -> dg.MetadataValue | str:
    return table_md([(c.what, c.dollars_per_1000 if c.dollars_per_1000 is not None else "unpriced",
                      c.docs_per_s if c.docs_per_s is not None else "", c.note) for c in costs],
                    ["", "$ per 1,000 documents", "documents/s", "note"]) if costs else "none"


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_model], kinds={"docx"},
          description="overall_metrics.png, per_dimension_mae.png, loss_curves.png, training_summary.txt and the .docx "
                      "report (summary, filter architecture with the dimensions table, method, results with the "
                      "baselines and plots, conclusions, cost: oracle $ per 1,000 documents against the scorer's).")
def filter_report(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    from distillery_assets.filters.report import PLOTS, SUMMARY, cost_lines, write_docx, write_plots

    defn, paths = _definition(context)
    result = _train_result(paths)
    history = json.loads(_require(paths.training_history, "training history", "filter_model").read_text())
    metadata = json.loads(paths.training_metadata.read_text(encoding="utf-8"))
    table = _judged(defn, paths, result)
    dims = defn.dimensions
    write_plots(history, dims, paths.plots_dir, title=f"{defn.name} v{defn.config.filter.version}")
    usage_file = paths.ground_truth_dir / ORACLE_USAGE
    usage = json.loads(usage_file.read_text()) if usage_file.exists() else {}
    oracle, speed = usage.get("oracle", {}), _scorer_speed(paths)
    costs = cost_lines(usage.get("total", {}), oracle, labels_mode=defn.config.oracle.mode == "labels",
                       scorer_docs_per_s=speed, reference=REFERENCE_ORACLE, dollars_per_hour=SCORER_DOLLARS_PER_HOUR)
    write_docx(_report_inputs(defn, paths, history=history, metadata=metadata, table=table, oracle=oracle,
                              costs=costs, test_examples=result.test_examples), paths.report_docx)
    files = [paths.report_docx, *[paths.plots_dir / p for p in (*PLOTS, SUMMARY)]]
    meta = register_files(context, catalog.get(), files, [
        InputRef(p, "filter_model") for p in (paths.training_history, paths.training_metadata, paths.model_dir,
                                              paths.version_dir / TEST_RESULTS)])
    return dg.MaterializeResult(metadata={
        **meta, "report": path_md(paths.report_docx), "plots": path_md(paths.plots_dir),
        **_curves_md(history, dims), **_results_meta(table, dims), "cost": _costs_md(costs),
        "scorer_docs_per_s": speed or 0.0,
        "summary": dg.MetadataValue.md("```\n" + (paths.plots_dir / SUMMARY).read_text(encoding="utf-8") + "```"),
    })


# ------------------------------------------------------------------------------------------ upload

class FilterUploadConfig(dg.Config):
    hub_repo_id: str | None = None
    """Hub repository; empty: ``deployment.hub_repo`` of the config, else ``distillery-filter-<name>-v<N>``."""


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_model], kinds={"huggingface"},
          description="The version's scorer (model/, history, metadata, test results) with a model card, private by "
                      "default. Without HF_TOKEN: uploads nothing and says why.")
def filter_upload(context: dg.AssetExecutionContext, config: FilterUploadConfig, hub: HubResource,
                  catalog: CatalogResource) -> dg.MaterializeResult:
    from distillery_assets.filters.card import render_filter_card
    from distillery_assets.io import atomic_path

    defn, paths = _definition(context)
    result = _train_result(paths)
    metadata = json.loads(paths.training_metadata.read_text(encoding="utf-8"))
    table = _judged(defn, paths, result)
    repo_id = config.hub_repo_id or defn.config.deployment.hub_repo or f"distillery-filter-{defn.name}-v{defn.version}"
    full_id = hub.full_repo_id(repo_id)
    card = render_filter_card(
        repo_id=full_id, filter_name=defn.name, filter_version=defn.config.filter.version,
        description=defn.config.filter.description,
        dims=[(d, v.weight, v.description) for d, v in defn.config.scoring.dimensions.items()], tiers=_tiers(defn),
        metadata=metadata, results=table)
    staging = paths.output_root / "upload" / paths.stem
    with atomic_path(staging, is_dir=True) as tmp:
        shutil.copytree(paths.model_dir, tmp / "model")
        for file in (paths.training_history, paths.training_metadata, paths.version_dir / TEST_RESULTS):
            shutil.copy2(file, tmp / file.name)
        for name in ("config.yaml", "prefilter.yaml", "prompt.md"):
            shutil.copy2(defn.folder / name, tmp / name)
        atomic_write_text(tmp / "README.md", card)
    if not defn.config.deployment.private and hub.private:
        context.log.info("config deployment.private is false, but the hub resource uploads privately "
                         "(DISTILLERY_HF_PUBLIC=1 publishes)")
    up = hub.upload_folder(staging, repo_id, repo_type="model", card_markdown=card)
    meta = register_files(context, catalog.get(), [staging], [InputRef(paths.model_dir, "filter_model")])
    return dg.MaterializeResult(metadata={
        **meta, "uploaded": bool(up.get("uploaded")), "reason": str(up.get("reason") or ""),
        "url": str(up.get("url") or ""), "repo_id": str(up.get("repo_id") or full_id),
        "private": bool(up.get("private")), "model_card": dg.MetadataValue.md(card),
    })


# ------------------------------------------------------------------------------------------ scores

class FilterScoresConfig(dg.Config):
    shard_size: int = 256
    """Documents per shard (the unit of resumption and of a Modal call)."""
    parallelism: int = 8
    """Shards in flight per wave on Modal (in process: one at a time)."""
    quantize: str | None = None
    """``int8``: torch dynamic quantization of the Linear layers (CPU)."""
    max_length: int | None = None
    """Tokens per document (default: the model's training max_length)."""


def _all_documents(defn: FilterDefinition, log) -> tuple[list[dict], list[InputRef]]:
    """Every document of the filter's sources, without the sampling ``limit`` of local sources (a Hub stream
    keeps its row limit), cleaned as the candidates were."""
    from distillery_assets.filters.clean import clean_document
    from distillery_assets.filters.sources import collect

    sources = [s if isinstance(s, HubSource) else s.model_copy(update={"limit": None}) for s in defn.config.sources]
    whole = defn.model_copy(update={"config": defn.config.model_copy(update={"sources": sources})})
    refs: list[InputRef] = []
    got = collect(whole, _locator(refs))
    for r in got.rejects[:10]:
        log(f"source reject: {r}")
    docs = [clean_document(d) for d in got.documents]
    return [d for d in docs if d["content"].strip()], refs


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_model, *_source_assets()], kinds={"pytorch"},
          pool=compute_pool(),
          description="Every document of the filter's sources scored by the trained model (dimensions, overall, tier, the "
                      "caps/gatekeepers that applied), in journalled shards through the compute resource's shard runner "
                      "(in process, or fanned out with .map on Modal); resumable; throughput in metadata.")
def filter_scores(context: dg.AssetExecutionContext, config: FilterScoresConfig, compute: ComputeResource,
                  catalog: CatalogResource) -> dg.MaterializeResult:
    from distillery_assets.filters.score import SCORES_FILE, SUMMARY_FILE, score_dataset
    from distillery_assets.filters.scoring import score

    defn, paths = _definition(context)
    _require(paths.model_dir, "trained model", "filter_model")
    docs, refs = _all_documents(defn, context.log.warning)
    if not docs:
        raise dg.Failure(f"{paths.key}: the sources hold no documents to score")
    scoring = defn.config.scoring
    options = {k: v for k, v in {"quantize": config.quantize, "max_length": config.max_length}.items() if v}
    runner = compute.shard_runner(_rel(paths.model_dir), parallelism=config.parallelism, **options)

    def rules(scores: dict[str, float], text: str):
        return score(scores, scoring, text=text)

    def on_shard(index: int, n: int) -> None:
        context.log.info(f"{paths.key}: shard {index} scored ({n} documents)")

    # caps look for trigger phrases in title+content, as the ground truth's scoring did
    with _dagster_log(context):
        run = score_dataset(docs, paths.scores_dir, runner=runner, rules=rules, dims=defn.dimensions,
                            shard_size=config.shard_size, on_shard=on_shard,
                            text_of=lambda d: f"{d.get('title') or ''}\n\n{d.get('content') or ''}".strip())
    meta = register_files(context, catalog.get(), [paths.scores_dir / SCORES_FILE, paths.scores_dir / SUMMARY_FILE],
                          [InputRef(paths.model_dir, "filter_model"), *refs])
    return dg.MaterializeResult(metadata={
        **meta, "documents": run.documents, "scored_this_run": run.scored_documents,
        "shards": run.shards, "shards_scored": run.shards_scored, "shards_reused": run.shards_reused,
        "seconds": run.seconds, "docs_per_s": run.docs_per_s, "runner": f"{compute.backend} shard runner",
        "tiers": _count_table(run.tiers, ("tier", "documents")),
        "caps_and_gates_applied": _count_table(run.applied, ("rule", "documents")),
        "mean_overall": run.mean_overall if run.mean_overall is not None else "n/a",
        "scores": path_md(paths.scores_dir / SCORES_FILE),
    })


ASSETS = [filter_candidates, filter_prefiltered, filter_ground_truth, filter_oracle_agreement, filter_splits,
          filter_model, filter_report, filter_upload, filter_scores]
defs = dg.Definitions(assets=ASSETS)
