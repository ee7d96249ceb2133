"""Filters (seed 004, "LLM Distillery"): versioned document scorers distilled from LLM labels, one static
partition per filter version folder ``data/filters/<name>/v<N>/`` (key ``<name>.v<N>``, e.g.
``educational_value.v1``; see :mod:`distillery_assets.partitions`).

    filter_candidates -> filter_prefiltered -> filter_ground_truth -> filter_splits -> filter_model
                                                      |                                  |-> filter_report
                                                      '-> filter_oracle_agreement        |-> filter_upload
                                                                                         '-> filter_scores

Thin wiring over :mod:`distillery_assets.filters`: :mod:`~distillery_assets.filters.pipeline` locates the
sources, loads the documents, judges the test split (once, into ``test_results.json``), writes the report and
stages the upload; every path comes from :class:`~distillery_assets.filters.paths.FilterPaths` (the seed's
layout). Each asset writes its files atomically, registers them in the catalogue (``register_files``) and
returns a ``MaterializeResult``.

The graph: ``gutenberg_chunks`` / ``theme_chunks`` (unpartitioned) are real dependencies of
``filter_candidates`` and ``filter_scores``, the union of what the versions' configs name (edges are per
asset, not per partition), so ``*filter_report`` selects them for every version, a JSONL-only one too. There
they cost a step launch and a fingerprint each: the theme assets skip finished work (``reused: true``, nothing
read or written, see :mod:`assets.theme`); ``--select '+key:filter_report and group:filters'`` leaves them out
of the run. A version that does not read them does not name them among its catalogue inputs either, and its
pages say which chunk assets it read (``chunk_sources``).

``story_corpus`` / ``encyclopedia_corpus`` are partitioned: a Dagster dependency would put them into
``*filter_report``, and one run cannot hold assets of two partitions definitions (a partition
mapping does not help: ``*asset`` still selects them and ``JobDefinition._get_partitions_def`` fails with "no
PartitionsDefinition shared by all the provided assets"), so they are catalogue edges only (each ``.corpus``
file read is an input with its asset key; a corpus not yet generated is a warning and ``missing_sources``,
never silent). ``filter_candidates`` and ``filter_scores`` name on their page which corpus partitions they
read, linked to those partitions' pages (``read story_corpus``, ``corpus_partitions_read``), and the
definition says so before any run (``catalogue_upstream``). The oracle goes through the LLM resource with a
journal (nothing is paid twice; lineage of the labels reaches the ``llm_calls`` rows), training through the
compute resource (``TrainFilterSpec``), batch scoring through its shard runner (in process, or Modal ``.map``).
"""


import json
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg

from assets.corpus import corpus_read_meta
from assets.logs import forward_logs
from assets.meta import llm_usage_meta, path_md, records_table, require_upstream, size, table_md
from assets.pools import Loads, model_pool
from distillery_assets.catalog import Catalog, InputRef
from distillery_assets.corpus.layout import corpus_root
from distillery_assets.filters import ground_truth as gt_lib
from distillery_assets.filters.ground_truth import MIN_RECORDS
from distillery_assets.filters import pipeline
from distillery_assets.filters.config import AssetSource, FilterConfigError, FilterDefinition, load_filter
from distillery_assets.filters.metrics import candidates_markdown, mae_sentence, results_markdown, results_summary
from distillery_assets.filters.paths import FilterPaths, filter_versions
from distillery_assets.filters.report import (COST_HEAD, EPOCH_HEAD, PLOTS, SUMMARY, cost_rows, curves_md,
                                              epoch_rows)
from distillery_assets.filters.score import SCORES_FILE, SUMMARY_FILE
from distillery_assets.filters.splits import SplitError, write_splits
from distillery_assets.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from distillery_assets.markdown import md_table
from distillery_assets.partitions import asset_url, filter_version_partitions
from io_managers.register import FileRegistrar, register_files
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource, record_upload
from resources.llm import LLMResource

GROUP = "filters"
PARTITIONS = filter_version_partitions
PASS_RATE_CHECK, LABELS_CHECK, BASELINES_CHECK, REPORT_CHECK = (
    "pass_rate_as_expected", "enough_labels", "scorer_beats_baselines", "report_files_present")
FORWARDED_LOGGERS = ("distillery_assets.filters", "distillery_assets.threads")
SOURCE_ASSETS = pipeline.source_assets()  # the chunk assets any version reads: real Dagster dependencies


# ----------------------------------------------------------------------------------------- helpers

def _definition(context: dg.AssetExecutionContext) -> tuple[FilterDefinition, FilterPaths]:
    paths = FilterPaths.for_key(context.partition_key)
    try:
        return load_filter(paths.definition), paths
    except FilterConfigError as exc:
        raise dg.Failure(str(exc)) from exc


def _dagster_log(context: dg.AssetExecutionContext):
    """The filters library's log lines (training epochs, scoring shards) in the run's log."""
    return forward_logs(context, FORWARDED_LOGGERS)


def _count_table(counts: dict[str, int], head: tuple[str, str]) -> dg.MetadataValue | str:
    return table_md(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), head) if counts else "none"


def _corpus_assets(defn: FilterDefinition) -> list[str]:
    """The partitioned corpus assets the version's sources name (catalogue edges, not Dagster ones)."""
    return [s.asset for s in defn.config.sources if isinstance(s, AssetSource) and s.asset in pipeline.CORPUS_ASSETS]


def _corpus_read(defn: FilterDefinition, refs: list[InputRef], documents: list[dict] | None = None) -> dict[str, Any]:
    """Which partitions of which corpus asset this version read (files located; documents kept), linked."""
    assets = _corpus_assets(defn)
    if not assets:
        return {}
    root = corpus_root()
    kept = None if documents is None else [root / d["id"] for d in documents
                                           if str(d.get("source", "")).startswith("corpus/")]
    return corpus_read_meta([r.path for r in refs if r.asset_key in assets], assets=assets, documents=kept, root=root)


def _catalogue_upstream() -> dg.MetadataValue:
    """Definition metadata: the versions that read a corpus asset, linked, and why it is no edge in the graph."""
    rows = []
    for version in filter_versions():
        try:
            assets = _corpus_assets(load_filter(version.folder))
        except FilterConfigError:
            continue
        if assets:
            rows.append((version.key, ", ".join(f"[{a}]({asset_url(a)})" for a in assets)))
    note = ("Read through the catalogue, not a Dagster edge: the corpus is partitioned otherwise and one run holds "
            "one partitions definition. Each materialization lists the corpus partitions it read.")
    return dg.MetadataValue.md(f"{note}\n\n{md_table(rows, ['version', 'reads every partition of'])}" if rows
                               else "No version reads a corpus asset.")


CATALOGUE_UPSTREAM = _catalogue_upstream()


def _chunk_readers() -> dict[str, list[str]]:
    """chunk asset -> the versions whose sources read it (the reason for its Dagster edge)."""
    readers: dict[str, list[str]] = {asset: [] for asset in SOURCE_ASSETS}
    for version in filter_versions():
        try:
            read = pipeline.chunk_assets_read(load_filter(version.folder))
        except FilterConfigError:
            continue
        for asset in read:
            readers.setdefault(asset, []).append(version.key)
    return readers


def _chunk_sources(defn: FilterDefinition, key: str) -> dict[str, Any]:
    """Which of the upstream chunk assets (Dagster edges of every version) this version read, in words."""
    if not SOURCE_ASSETS:
        return {}
    read, readers = pipeline.chunk_assets_read(defn), _chunk_readers()
    rows = [(f"[{a}]({asset_url(a)})", "read" if a in read else
             f"not read (an edge for {', '.join(readers.get(a, [])) or 'no version'})") for a in SOURCE_ASSETS]
    note = "" if read else (f"\n\n{key} reads none of them: `--select '+key:filter_report and group:filters' "
                            f"--partition {key}` leaves them out of the run (in `*filter_report` they are reused).")
    return {"chunk_sources": dg.MetadataValue.md(md_table(rows, ["upstream asset", key]) + note)}


def _register_read(context: dg.AssetExecutionContext, cat: Catalog, defn: FilterDefinition, paths: list[Path],
                   inputs: list[Path | InputRef]) -> dict[str, Any]:
    """``register_files``, except that a chunk asset this version does not read (a Dagster dependency for the
    versions that do) is not made one of its catalogue inputs."""
    unread = [a for a in SOURCE_ASSETS if a not in pipeline.chunk_assets_read(defn)]
    files = FileRegistrar(context, cat, inputs, per_file_assets=unread)
    files.add(*paths)
    return files.commit()


# ---------------------------------------------------------------------------------------- candidates

def _candidates_meta(defn: FilterDefinition, paths: FilterPaths, cands, missing: list[str]) -> dict[str, Any]:
    return {
        "documents": len(cands.documents), "rejects": len(cands.rejects),
        "emptied_by_cleaning": cands.emptied_by_cleaning,
        "sources": table_md(pipeline.source_rows(defn, cands.per_source),
                            ["source", "documents", "limit", "graph edge"]),
        "missing_sources": dg.MetadataValue.json(missing),
        "reject_reasons": _count_table(dict(Counter(r.reason for r in cands.rejects)), ("reason", "documents")),
        "rejects_sample": table_md([(r.where, r.reason, r.detail) for r in cands.rejects[:20]],
                                   ["where", "reason", "detail"]) if cands.rejects else "none",
        "preview": records_table(cands.documents, ["id", "title"], n=6, limit=300, long=["content"]),
        "definition": path_md(paths.definition),
    }


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=SOURCE_ASSETS, kinds={"python"},
          metadata={"catalogue_upstream": CATALOGUE_UPSTREAM},
          description="The filter version's documents from its configured sources (platform assets, a JSONL file "
                      "of articles, a streamed Hub dataset), cleaned: unicode NFC, HTML, zero-width and BiDi marks. "
                      "Every dropped document is a reject with its reason.")
def filter_candidates(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    locator = pipeline.SourceLocator(paths.key)
    try:
        cands = gt_lib.candidates(defn, locator)
    except (FilterConfigError, pipeline.MissingSource) as exc:
        raise dg.Failure(str(exc)) from exc
    missing = [asset for asset, _ in locator.empty]
    for line in locator.empty_warnings():
        context.log.warning(line)
    if not cands.documents:
        raise dg.Failure(f"{paths.key}: no documents from the sources {[s.kind for s in defn.config.sources]} "
                         f"(missing: {missing}); rejects: {[str(r) for r in cands.rejects[:5]]}")
    for reject in cands.rejects[:20]:
        context.log.warning(f"source reject: {reject}")
    atomic_write_jsonl(paths.candidates, cands.documents)
    atomic_write_jsonl(paths.candidate_rejects, [r.to_dict() for r in cands.rejects])
    meta = _register_read(context, catalog.get(), defn, [paths.candidates, paths.candidate_rejects],
                          locator.inputs(defn))
    return dg.MaterializeResult(metadata={**meta, **_candidates_meta(defn, paths, cands, missing),
                                          **_chunk_sources(defn, paths.key),
                                          **_corpus_read(defn, locator.refs, cands.documents)})


# ---------------------------------------------------------------------------------------- prefilter

def _pass_rate_check(s: dict[str, Any], tolerance: float) -> dg.AssetCheckResult:
    """The prefilter's pass rate against ``prefilter.expected_pass_rate`` +- ``pass_rate_tolerance`` (config.yaml)."""
    expected = s["expected_pass_rate"]
    if expected is None:
        return dg.AssetCheckResult(check_name=PASS_RATE_CHECK, passed=True, metadata={
            "pass_rate": s["pass_rate"], "expected_pass_rate": "not set (config.yaml prefilter.expected_pass_rate)"})
    return dg.AssetCheckResult(
        check_name=PASS_RATE_CHECK, passed=abs(s["pass_rate"] - expected) <= tolerance,
        severity=dg.AssetCheckSeverity.WARN, metadata={
            "pass_rate": s["pass_rate"], "expected_pass_rate": expected, "tolerance": tolerance,
            "band": f"{max(0.0, expected - tolerance):.2f} to {min(1.0, expected + tolerance):.2f}",
            "documents": s["total"], "passed_documents": s["passed"]})


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_candidates], kinds={"python"},
          check_specs=[dg.AssetCheckSpec(PASS_RATE_CHECK, asset="filter_prefiltered", description=(
              "The share of candidates the prefilter passes is within prefilter.pass_rate_tolerance (default 0.1) of "
              "config.yaml's prefilter.expected_pass_rate (a warning: the sources or the rules changed)."))],
          description="prefilter.yaml's rules on each candidate, first deciding rule wins: pass/block with the rule's "
                      "reason; pass rate against the config's expected rate.")
def filter_prefiltered(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    docs = read_jsonl(require_upstream(paths.candidates, "candidates", "filter_candidates"))
    pre = gt_lib.prefilter(defn, docs)
    rows = [{**doc, "prefilter": d.to_dict()} for doc, d in zip(docs, pre.decisions, strict=True)]
    atomic_write_jsonl(paths.prefiltered, rows)
    meta = register_files(context, catalog.get(), [paths.prefiltered], [defn.folder / "prefilter.yaml"])
    s = pre.summary.as_dict()
    blocked = [(d.id, d.reason, d.detail) for d in pre.decisions if not d.passed]
    return dg.MaterializeResult(metadata={
        **meta, "documents": s["total"], "passed": s["passed"], "blocked": s["blocked"],
        "pass_rate": s["pass_rate"],
        "expected_pass_rate": "not set" if s["expected_pass_rate"] is None else s["expected_pass_rate"],
        "pass_rate_minus_expected": "n/a" if s["pass_rate_minus_expected"] is None else s["pass_rate_minus_expected"],
        "by_reason": _count_table(s["by_reason"], ("reason", "documents")),
        "blocked_sample": table_md(blocked[:20], ["id", "reason", "detail"]) if blocked else "none",
    }, check_results=[_pass_rate_check(s, defn.config.prefilter.pass_rate_tolerance)])


# ------------------------------------------------------------------------------------- ground truth

def _ground_truth_meta(defn: FilterDefinition, paths: FilterPaths, gt, passed: int, usage: dict[str, Any],
                       oracle: dict, provider: str | None = None) -> dict[str, Any]:
    mode = defn.config.oracle.mode
    return {
        "mode": mode, "documents_passed": passed, "selected_for_oracle": gt.selected,
        "records": len(gt.records), "rejects": len(gt.rejects), "failures": len(gt.failures),
        "resumed_from_journal": int(gt.summary.get("resumed_from_journal", 0)),
        "reject_reasons": _count_table(dict(Counter(r["reason"] for r in gt.rejects)), ("reason", "documents")),
        "rejects_sample": table_md([(r.get("key"), r.get("reason"), str(r.get("detail") or r.get("where") or "")[:160])
                                    for r in gt.rejects[:15]], ["id", "reason", "detail"]) if gt.rejects else "none",
        "failures_sample": table_md([(r.get("key"), str(r.get("reason"))[:160]) for r in gt.failures[:15]],
                                    ["id", "reason"]) if gt.failures else "none",
        "tiers": _count_table(dict(Counter(r["tier"] for r in gt.records)), ("tier", "documents")),
        "caps_and_gates_applied": _count_table(dict(Counter(a for r in gt.records for a in r.get("applied") or [])),
                                               ("rule", "documents")),
        "dimensions": table_md(gt_lib.dimension_stats(gt.records, defn.dimensions),
                               ["dimension", "mean", "std", "min", "max"]),
        "mean_overall": gt.mean_overall, "oracle": dg.MetadataValue.json(oracle),
        **llm_usage_meta(gt.usage or {}, provider),
        **({"cost_note": "labels file: no LLM calls"} if mode == "labels" else {}),
        **pipeline.usage_figures(usage, gt.seconds),
        "journal": path_md(paths.oracle_journal) if mode == "llm" else "labels file",
        "preview": records_table(gt.records, ["id", "tier", "overall", "scores", "applied"], n=8),
    }


def _labels_check(gt, mode: str) -> dg.AssetCheckResult:
    """Enough labels for train/val/test (an error below that), and most documents asked got one (a warning)."""
    asked = gt.selected if mode == "llm" else len(gt.records) + len(gt.rejects)
    share = len(gt.records) / asked if asked else 0.0
    enough = len(gt.records) >= MIN_RECORDS
    return dg.AssetCheckResult(
        check_name=LABELS_CHECK, passed=enough and share >= 0.5,
        severity=dg.AssetCheckSeverity.ERROR if not enough else dg.AssetCheckSeverity.WARN,
        metadata={"labels": len(gt.records), "minimum": MIN_RECORDS, "documents_asked": asked,
                  "labelled_share": round(share, 3), "rejects": len(gt.rejects), "failures": len(gt.failures)})


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_prefiltered], kinds={"jsonl"},
          pool=model_pool(Loads.LLM),
          check_specs=[dg.AssetCheckSpec(LABELS_CHECK, asset="filter_ground_truth", description=(
              "At least 3 labelled documents (train, val and test need one each; an error below that), and at least "
              "half of the documents asked got a label (a warning: the oracle's answers were mostly rejected)."))],
          description="The oracle: the LLM resource scores each passed document on the dimensions (JSON schema from the "
                      "config, temperature 0.3, content cut to 800 words 70/30 around a marker, bounded re-asks); a "
                      "reply that is not JSON or misses a dimension is a logged reject, never a score; overall = "
                      "weighted sum, then caps and gatekeepers. Journalled: nothing is paid twice. Or `oracle: "
                      "labels`: an existing labels file.")
def filter_ground_truth(context: dg.AssetExecutionContext, llm: LLMResource,
                        catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    require_upstream(paths.prefiltered, "prefilter decisions", "filter_prefiltered")
    docs = pipeline.passed_documents(paths)
    mode = defn.config.oracle.mode
    stopped: Exception | None = None
    try:
        client = llm.get_client(context) if mode == "llm" else None
        gt = gt_lib.label(defn, docs, client, journal=paths.oracle_journal if mode == "llm" else None,
                          log=context.log.info, blocked=pipeline.blocked_documents(paths))
    except Exception as exc:  # noqa: BLE001 -- still an outcome: written below, then raised
        stopped, gt = exc, gt_lib.GroundTruth.stopped(exc, mode)
    for line in gt.problems():
        context.log.warning(line)
    # Whatever the outcome, the labels and rejects files describe this run (each written atomically, then
    # catalogued): a failed run leaves its own (possibly empty) labels and its rejects, never the previous ones.
    usage, oracle = pipeline.write_ground_truth(paths, gt)
    cat, files = catalog.get(), pipeline.label_files(defn, paths)
    if files.journal is not None:  # registered first: an input of the labels (lineage reaches the oracle calls)
        register_files(context, cat, [files.journal], files.inputs)
    meta = register_files(context, cat, files.items, files.inputs)
    if stopped is not None and not isinstance(stopped, FilterConfigError):
        raise stopped  # an unexpected error keeps its own traceback (the files above already record it)
    problem = gt.shortfall()
    if problem:
        raise dg.Failure(f"{paths.key}: {problem}; {paths.labels.name} and {paths.oracle_rejects.name} hold this "
                         "run's outcome", metadata={
                             "labels": path_md(paths.labels), "oracle_rejects": path_md(paths.oracle_rejects),
                             "records": len(gt.records), "rejects": len(gt.rejects), "failures": len(gt.failures),
                             "reject_reasons": _count_table(dict(Counter(r["reason"] for r in gt.rejects)),
                                                            ("reason", "documents"))}) from stopped
    return dg.MaterializeResult(
        metadata={**meta, **_ground_truth_meta(defn, paths, gt, len(docs), usage, oracle, llm.provider)},
        check_results=[_labels_check(gt, mode)])


# --------------------------------------------------------------------------------------- agreement

class AgreementConfig(dg.Config):
    """The second oracle: overrides of the LLM resource's settings (empty: ``oracle.agreement_model`` on the
    same provider). Without any second oracle the asset says so and compares nothing."""

    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    sample: int | None = None
    batch: bool | None = None  # the second oracle through the provider's batch API (null: the resource's setting)


def _agreement_meta(out: dict[str, Any]) -> dict[str, Any]:
    rows = [(d, v["pearson"], v["spearman"], v["mae"], v["mean_a"], v["mean_b"]) for d, v in out["dimensions"].items()]
    return {
        "compared": True, "documents_compared": out["n"], "mean_pearson": out["mean_pearson"] or "undefined",
        "mean_mae": out["mean_mae"] if out["mean_mae"] is not None else "n/a",
        "per_dimension": table_md(rows, ["dimension", "pearson", "spearman", "MAE", "mean A", "mean B"]),
        "oracle_b": dg.MetadataValue.json(out["oracle_b"]), "rejects_b": out["rejects_b"],
        **llm_usage_meta(out["usage_b"], (out.get("oracle_b") or {}).get("provider")),
    }


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_ground_truth], kinds={"jsonl"},
          pool=model_pool(Loads.LLM),
          description="Two oracles on the same sample of labelled documents (the ground truth's, and a second provider "
                      "or model): per-dimension Pearson/Spearman and MAE, so you know whether the labels are worth "
                      "distilling. Journalled like the ground truth.")
def filter_oracle_agreement(context: dg.AssetExecutionContext, config: AgreementConfig, llm: LLMResource,
                            catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    records = read_jsonl(require_upstream(paths.labels, "labels", "filter_ground_truth"))
    overrides = {k: v for k, v in {"provider": config.provider, "base_url": config.base_url,
                                   "api_key_env": config.api_key_env}.items() if v}
    batch = {"batch": config.batch} if config.batch is not None else {}
    model_b = config.model or defn.config.oracle.agreement_model
    compared = bool(overrides) or model_b is not None
    out: dict[str, Any] = {"compared": False, "reason": "no second oracle"}
    if compared:  # a client of the resource's settings with the overrides; the resource closes it after the step
        out = gt_lib.oracle_agreement(defn, records, llm.get_client(context, **overrides, **batch, model=model_b),
                                      model=model_b, provider=llm.settings(**overrides).provider, sample=config.sample,
                                      journal=paths.agreement_journal, log=context.log.info)
    atomic_write_text(paths.agreement, json.dumps(out, indent=2))
    journal = [paths.agreement_journal] if compared and paths.agreement_journal.exists() else []
    meta = register_files(context, catalog.get(), [paths.agreement, *journal],
                          [InputRef(paths.labels, "filter_ground_truth")])
    if not compared:
        return dg.MaterializeResult(metadata={**meta, "compared": False, "reason": "no second oracle configured: set "
                                              "oracle.agreement_model in config.yaml, or this asset's "
                                              "provider/base_url/model config"})
    return dg.MaterializeResult(metadata={**meta, **_agreement_meta(out)})


# ------------------------------------------------------------------------------------------ splits

@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_ground_truth], kinds={"python"},
          description="Train/val/test stratified by tier, 80/10/10, seed 42; split_metadata.json with the seed's legacy "
                      "fields (plus tiers per split and the files' sha256).")
def filter_splits(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    records = read_jsonl(require_upstream(paths.labels, "labels", "filter_ground_truth"))
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

def _results_meta(table: dict[str, dict[str, Any]], dims: list[str], candidates: list[dict] | None = None,
                  n_test: int | None = None) -> dict[str, Any]:
    """The judged test table, its headline in words, and (when given) every candidate head of the run."""
    out = {"results": dg.MetadataValue.md(results_markdown(table, dims)), **results_summary(table),
           "in_words": mae_sentence(table, n_test)}
    if candidates:
        out["candidates"] = dg.MetadataValue.md(candidates_markdown(candidates, table))
    return out


def _baselines_check(table: dict[str, dict[str, Any]]) -> dg.AssetCheckResult:
    """The judged test table in hand: the scorer's MAE below the mean predictor's (an error otherwise) and
    below ridge regression on the same embeddings (a warning otherwise)."""
    s = results_summary(table)
    return dg.AssetCheckResult(
        check_name=BASELINES_CHECK, passed=s["beats_mean_predictor"] and s["beats_ridge"],
        severity=dg.AssetCheckSeverity.ERROR if not s["beats_mean_predictor"] else dg.AssetCheckSeverity.WARN,
        metadata={k: s[k] for k in ("test_mae", "mean_predictor_test_mae", "ridge_test_mae", "beats_mean_predictor",
                                    "beats_ridge", "tier_accuracy", "f1")})


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_splits], kinds={"pytorch"}, pool=model_pool(Loads.COMPUTE),
          check_specs=[dg.AssetCheckSpec(BASELINES_CHECK, asset="filter_model", description=(
              "On the test split (judged with the filter's rules), the scorer's MAE is below the mean predictor's (an "
              "error otherwise: nothing was learned) and below ridge regression on the frozen embeddings (a "
              "warning otherwise)."))],
          description="The scorer, through the compute resource: candidate heads on the shipped all-MiniLM-L6-v2 "
                      "(ridge in closed form, an MLP on the frozen embeddings, full fine-tuning on GPU; LoRA by "
                      "config), each stopping early on validation; the one with the lowest validation MAE is kept in "
                      "the version's model/. Every candidate in one table; test table with the mean predictor and "
                      "ridge baselines; one catalogue runs row per trained model.")
def filter_model(context: dg.AssetExecutionContext, compute: ComputeResource,
                 catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    cat = catalog.get()
    require_upstream(paths.split_metadata, "splits", "filter_splits")
    try:
        spec = pipeline.train_spec(defn, paths)
    except FilterConfigError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"{paths.key}: training {spec.config.mode} on {spec.config.base_model} ({compute.backend})")
    with _dagster_log(context):
        result = compute.run_step(spec)
    ran_on = compute.ran_on(result.device)
    table = pipeline.judged(defn, paths, result)  # judged once here; the report and the upload read the file
    pipeline.write_test_results(paths, table, result, ran_on)
    if result.reused:
        context.log.info(f"{paths.key}: finished model reused (fingerprint {result.fingerprint}); nothing trained")
    else:
        cat.record_run(kind="train", name="filter_model", partition=paths.key, run_id=context.run_id,
                       **pipeline.run_record(defn, spec, result, table, ran_on))
    meta = register_files(context, cat, [paths.model_dir, paths.training_history, paths.training_metadata,
                                         paths.test_results], pipeline.definition_files(defn))
    return dg.MaterializeResult(metadata={
        **meta, "ran_on": ran_on, "reused": result.reused, "mode": result.mode, "base_model": result.base_model,
        "recipe": result.recipe, "include_title": result.include_title,
        "include_title_reason": result.include_title_reason,
        "best_epoch": result.best_epoch, "best_val_mae": round(result.best_val_mae, 4),
        "train_examples": result.train_examples, "val_examples": result.val_examples,
        "test_examples": result.test_examples, "trainable_parameters": result.num_trainable_parameters,
        "train_seconds": result.train_seconds,
        **_results_meta(table, defn.dimensions, [c.model_dump(exclude={"history"}) for c in result.candidates],
                        result.test_examples),
        "epochs": (table_md(epoch_rows(result.history), EPOCH_HEAD) if result.history
                   else f"none: the kept candidate ({result.mode}) is closed form"),
        "model_dir": path_md(paths.model_dir), "model_size": size(paths.model_dir),
    }, check_results=[_baselines_check(table)])


# ------------------------------------------------------------------------------------------ report

def _report_check(files: list[Path]) -> dg.AssetCheckResult:
    missing = [p.name for p in files if not p.is_file() or p.stat().st_size == 0]
    return dg.AssetCheckResult(check_name=REPORT_CHECK, passed=not missing, metadata={
        "files": dg.MetadataValue.json([p.name for p in files]), "missing_or_empty": dg.MetadataValue.json(missing)})


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_model], kinds={"docx"}, pool=model_pool(Loads.ALWAYS),
          check_specs=[dg.AssetCheckSpec(REPORT_CHECK, asset="filter_report", description=(
              "The .docx report, the four plots and training_summary.txt exist and are not empty."))],
          description="overall_metrics.png (with the baselines' levels), per_dimension_mae.png, loss_curves.png, "
                      "predicted_vs_true.png (test split, per dimension), training_summary.txt and the .docx "
                      "report (summary, filter architecture with the dimensions table, method, results with the "
                      "baselines and plots, conclusions, cost: oracle $ per 1,000 documents against the scorer's).")
def filter_report(context: dg.AssetExecutionContext, catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    require_upstream(paths.test_results, "trained model", "filter_model")
    require_upstream(paths.training_history, "training history", "filter_model")
    report = pipeline.write_report(defn, paths)
    files = [paths.report_docx, *[paths.plots_dir / p for p in (*PLOTS, SUMMARY)]]
    meta = register_files(context, catalog.get(), files, [
        InputRef(p, "filter_model") for p in (paths.training_history, paths.training_metadata, paths.model_dir,
                                              paths.test_results)])
    return dg.MaterializeResult(metadata={
        **meta, "report": path_md(paths.report_docx), "plots": path_md(paths.plots_dir),
        **{name: dg.MetadataValue.md(md) for name, md in curves_md(report.history, defn.dimensions,
                                                                   report.levels).items()},
        "curves_of": report.curve_of or "none (ridge alone: no epochs)",
        **_results_meta(report.table, defn.dimensions, report.candidates),
        "cost": table_md(cost_rows(report.costs), COST_HEAD) if report.costs else "none",
        "scorer_docs_per_s": report.scorer_docs_per_s or 0.0,
        "summary": dg.MetadataValue.md("```\n" + (paths.plots_dir / SUMMARY).read_text(encoding="utf-8") + "```"),
    }, check_results=[_report_check(files)])


# ------------------------------------------------------------------------------------------ upload

class FilterUploadConfig(dg.Config):
    hub_repo_id: str | None = None
    """Hub repository; empty: ``deployment.hub_repo`` of the config, else ``distillery-filter-<name>-v<N>``."""


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_model], kinds={"huggingface"},
          description="The version's scorer (model/, history, metadata, test results) with a model card, private by "
                      "default. Without HF_TOKEN: uploads nothing and says why.")
def filter_upload(context: dg.AssetExecutionContext, config: FilterUploadConfig, hub: HubResource,
                  catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    require_upstream(paths.test_results, "trained model", "filter_model")
    repo_id = pipeline.hub_repo(defn, config.hub_repo_id)
    full_id = hub.full_repo_id(repo_id)
    card = pipeline.filter_card(defn, paths, full_id)
    staging = pipeline.stage_upload(defn, paths, card)
    if not defn.config.deployment.private and hub.private:
        context.log.info("config deployment.private is false, but the hub resource uploads privately "
                         "(DISTILLERY_HF_PUBLIC=1 publishes)")
    up = hub.upload_folder(staging, repo_id, repo_type="model", card_markdown=card)
    meta = register_files(context, catalog.get(), [staging], [InputRef(paths.model_dir, "filter_model")])
    return dg.MaterializeResult(metadata={**meta, **record_upload(context, catalog.get(), up),
                                          "model_card": dg.MetadataValue.md(card)})


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


@dg.asset(group_name=GROUP, partitions_def=PARTITIONS, deps=[filter_model, *SOURCE_ASSETS], kinds={"pytorch"},
          pool=model_pool(Loads.COMPUTE), metadata={"catalogue_upstream": CATALOGUE_UPSTREAM},
          description="Every document of the filter's sources scored by the trained model (dimensions, overall, tier, the "
                      "caps/gatekeepers that applied), in journalled shards through the compute resource's shard runner "
                      "(in process, or fanned out with .map on Modal); resumable; throughput in metadata.")
def filter_scores(context: dg.AssetExecutionContext, config: FilterScoresConfig, compute: ComputeResource,
                  catalog: CatalogResource) -> dg.MaterializeResult:
    defn, paths = _definition(context)
    require_upstream(paths.model_dir, "trained model", "filter_model")
    try:
        docs = pipeline.scoring_documents(defn)
    except (FilterConfigError, pipeline.MissingSource) as exc:
        raise dg.Failure(str(exc)) from exc
    for reject in docs.rejects[:10]:
        context.log.warning(f"source reject: {reject}")
    if not docs.documents:
        raise dg.Failure(f"{paths.key}: the sources hold no documents to score")
    options = {k: v for k, v in {"quantize": config.quantize, "max_length": config.max_length}.items() if v}
    runner = compute.shard_runner(pipeline.data_relative(paths.model_dir), parallelism=config.parallelism, **options)
    with _dagster_log(context):
        run = pipeline.score_documents(defn, paths, docs.documents, runner=runner, shard_size=config.shard_size,
                                       on_shard=lambda i, n: context.log.info(f"{paths.key}: shard {i} scored "
                                                                              f"({n} documents)"))
    meta = _register_read(context, catalog.get(), defn,
                          [paths.scores_dir / SCORES_FILE, paths.scores_dir / SUMMARY_FILE],
                          [InputRef(paths.model_dir, "filter_model"), *docs.inputs])
    return dg.MaterializeResult(metadata={
        **meta, "documents": run.documents, "scored_this_run": run.scored_documents,
        "shards": run.shards, "shards_scored": run.shards_scored, "shards_reused": run.shards_reused,
        "seconds": run.seconds, "docs_per_s": run.docs_per_s, "runner": f"{compute.backend} shard runner",
        "tiers": _count_table(run.tiers, ("tier", "documents")),
        "caps_and_gates_applied": _count_table(run.applied, ("rule", "documents")),
        "mean_overall": run.mean_overall if run.mean_overall is not None else "n/a",
        "scores": path_md(paths.scores_dir / SCORES_FILE), **_chunk_sources(defn, paths.key),
        **_corpus_read(defn, docs.inputs),
    })


ASSETS = [filter_candidates, filter_prefiltered, filter_ground_truth, filter_oracle_agreement, filter_splits,
          filter_model, filter_report, filter_upload, filter_scores]
defs = dg.Definitions(assets=ASSETS)
