"""What each filter asset does around the library's steps, so the asset module only wires (no Dagster here).

    locator = SourceLocator(key); cands = candidates(defn, locator)    # sources located, documents loaded
    totals, oracle = write_ground_truth(paths, gt)                    # labels, rejects, usage summed over runs
    spec = train_spec(defn, paths); table = judged(defn, paths, result); write_test_results(...)
    report = write_report(defn, paths)                                # plots, .docx, costs, scorer speed
    staging = stage_upload(defn, paths, filter_card(defn, repo_id))   # the Hub folder with its card
    docs = scoring_documents(defn); run = score_documents(defn, paths, docs.documents, runner=...)

Where the documents of an ``asset`` source live: ``gutenberg_chunks`` / ``theme_chunks`` are the theme
pipeline's JSONL files (``data_dir()/theme/<asset>.jsonl``, which must exist); ``story_corpus`` /
``encyclopedia_corpus`` are the ``.corpus`` files of one half of the corpus root, each recorded as a catalogue
input with its asset key (a half with none yet gives zero documents and is named, never silent).

``filter_model`` judges the test split once with the filter's own rules (caps on the text, gatekeepers) and
writes ``test_results.json``; the report and the upload read that file.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillery_assets.catalog import InputRef, NewArtifact
from distillery_assets.corpus.layout import CORPUS_SUFFIX, corpus_root
from distillery_assets.filters.card import render_filter_card
from distillery_assets.filters.clean import clean_document
from distillery_assets.filters.config import (AssetSource, FilterConfigError, FilterDefinition, HubSource,
                                              JsonlSource, load_filter)
from distillery_assets.filters.ground_truth import GroundTruth, accumulate_usage
from distillery_assets.filters.paths import FilterPaths, filter_versions
from distillery_assets.filters.report import CostLine, Levels, ReportInputs, cost_lines, write_docx, write_plots
from distillery_assets.filters.score import ScoreRun, Scorer, ShardRunner, score_dataset
from distillery_assets.filters.scoring import score
from distillery_assets.filters.sources import SourceReject, collect, document_text
from distillery_assets.filters.train import (RESULT_FILE, SCORER_FILE, FilterTrainConfig, FilterTrainResult,
                                             TrainFilterSpec, example_text, judge_predictions)
from distillery_assets.io import atomic_path, atomic_write_jsonl, atomic_write_text, read_jsonl
from distillery_assets.paths import data_dir

log = logging.getLogger(__name__)

CHUNK_ASSETS = ("gutenberg_chunks", "theme_chunks")  # unpartitioned: real Dagster dependencies
CORPUS_ASSETS = {"story_corpus": "stories", "encyclopedia_corpus": "encyclopedia"}  # partitioned: catalogue edges
DEFINITION_FILES = ("config.yaml", "prefilter.yaml", "prompt.md")
EMBED_CACHE = "filters/embeddings"  # relative to data_dir: MiniLM vectors by text hash, shared by every version
REFERENCE_ORACLE = ("openai", "gpt-4o-mini")  # a priced model for the cost table (same tokens per document)
SCORER_DOLLARS_PER_HOUR = 0.05  # an assumed price of the CPU the scorer runs on, stated in the report


class MissingSource(ValueError):
    """A source asset's file does not exist yet; the message says to materialize it."""


# -------------------------------------------------------------------------------------------- the definition

def source_assets() -> list[str]:
    """The unpartitioned platform assets any version's config reads (the union: Dagster edges are per asset,
    not per partition). A config that does not load adds nothing here; it fails when its own partition runs."""
    wanted: set[str] = set()
    for version in filter_versions():
        try:
            defn = load_filter(version.folder)
        except FilterConfigError as exc:
            log.warning("filter %s: %s", version.key, exc)
            continue
        wanted |= set(chunk_assets_read(defn))
    return sorted(wanted)


def chunk_assets_read(defn: FilterDefinition) -> list[str]:
    """The unpartitioned chunk assets this version's own sources read (a JSONL-only version: none). The Dagster
    edges are the union over versions (:func:`source_assets`); this is what one partition actually reads."""
    return sorted({s.asset for s in defn.config.sources if isinstance(s, AssetSource) and s.asset in CHUNK_ASSETS})


def definition_files(defn: FilterDefinition) -> list[Path]:
    return [p for p in (defn.folder / n for n in DEFINITION_FILES) if p.exists()]


def data_relative(path: Path) -> str:
    """A path under the data folder as the compute resource takes it (the same relative path on Modal)."""
    return Path(path).resolve().relative_to(data_dir()).as_posix()


def _tiers(defn: FilterDefinition) -> list[tuple[str, float]]:
    return [(n, float(t.threshold)) for n, t in defn.config.scoring.tiers_descending()]


def _binary_threshold(defn: FilterDefinition) -> float | None:
    tier = defn.config.training.binary_tier
    return float(defn.config.scoring.tiers[tier].threshold) if tier else None


def _dims_table(defn: FilterDefinition) -> list[tuple[str, float, str]]:
    return [(d, v.weight, v.description) for d, v in defn.config.scoring.dimensions.items()]


# ------------------------------------------------------------------------------------------------ sources

def chunk_file(asset: str) -> Path:
    return data_dir() / "theme" / f"{asset}.jsonl"


class SourceLocator:
    """``locate(asset_source) -> Path`` for :func:`distillery_assets.filters.sources.collect`: a chunk asset is
    its theme JSONL file (:class:`MissingSource` when it does not exist); a corpus asset is the corpus root,
    each ``.corpus`` file of its half added to :attr:`refs` (catalogue inputs with the asset key) and a half
    with none yet to :attr:`empty` as (asset, root)."""

    def __init__(self, key: str = ""):
        self.prefix = f"{key}: " if key else ""
        self.refs: list[InputRef] = []
        self.empty: list[tuple[str, Path]] = []

    def __call__(self, src: AssetSource) -> Path:
        if src.asset in CORPUS_ASSETS:
            root = corpus_root()
            files = sorted((root / CORPUS_ASSETS[src.asset]).rglob(f"*{CORPUS_SUFFIX}"))
            if not files:
                self.empty.append((src.asset, root))
            self.refs.extend(InputRef(f, src.asset) for f in files)
            return root
        file = chunk_file(src.asset)
        if not file.exists():
            raise MissingSource(f"{self.prefix}source {src.asset} ({file}) does not exist; materialize it first")
        return file

    def empty_warnings(self) -> list[str]:
        return [f"{self.prefix}source {asset} has no .corpus files under {root} yet (materialize its partitions to "
                "include them); 0 documents from it" for asset, root in self.empty]

    def inputs(self, defn: FilterDefinition) -> list[Path | InputRef]:
        """Everything a candidates file was made from: the definition, the located files, the JSONL sources."""
        return [*definition_files(defn), *self.refs,
                *[defn.resolve(s.path) for s in defn.config.sources if isinstance(s, JsonlSource)]]


def source_rows(defn: FilterDefinition, per_source: dict[str, int]) -> list[tuple]:
    """One row per configured source: its label, documents kept, limit, and how the graph shows it."""
    rows = []
    for src in defn.config.sources:
        label = src.asset if isinstance(src, AssetSource) else (
            f"hub:{src.dataset}" if isinstance(src, HubSource) else f"jsonl:{src.path}")
        edge = ("dagster dependency" if isinstance(src, AssetSource) and src.asset in CHUNK_ASSETS else
                "catalogue edges (partitioned upstream)" if isinstance(src, AssetSource) else "file input")
        rows.append((label, per_source.get(label, 0), src.limit, edge))
    return rows


@dataclass
class ScoringDocuments:
    documents: list[dict]
    rejects: list[SourceReject]
    inputs: list[InputRef]


def scoring_documents(defn: FilterDefinition) -> ScoringDocuments:
    """Every document of the filter's sources, without the sampling ``limit`` of local sources (a Hub stream
    keeps its row limit), cleaned as the candidates were; documents left empty by cleaning are dropped."""
    sources = [s if isinstance(s, HubSource) else s.model_copy(update={"limit": None}) for s in defn.config.sources]
    whole = defn.model_copy(update={"config": defn.config.model_copy(update={"sources": sources})})
    locator = SourceLocator()
    got = collect(whole, locator)
    docs = [clean_document(d) for d in got.documents]
    return ScoringDocuments([d for d in docs if d["content"].strip()], got.rejects, locator.refs)


# ------------------------------------------------------------------------------------------- ground truth

def passed_documents(paths: FilterPaths) -> list[dict]:
    """The documents the prefilter passed, without their decision."""
    rows = read_jsonl(paths.prefiltered)
    return [{k: v for k, v in r.items() if k != "prefilter"} for r in rows if r["prefilter"]["passed"]]


def blocked_documents(paths: FilterPaths) -> dict[str, str]:
    """The documents the prefilter blocked: id -> the deciding rule's reason."""
    return {str(r["id"]): str(r["prefilter"].get("reason")) for r in read_jsonl(paths.prefiltered)
            if not r["prefilter"]["passed"]}


def write_ground_truth(paths: FilterPaths, gt: GroundTruth) -> tuple[dict[str, Any], dict]:
    """``labeled_articles.jsonl``, ``oracle_rejects.jsonl`` (rejects, then failures, then the error that stopped
    labelling, each with its ``kind``) and this run's usage added to ``oracle_usage.json``: (the usage totals,
    this run's oracle). Written for every run that got to label, a failed one included (possibly no labels at
    all), each file atomically, so both always describe the latest run."""
    atomic_write_jsonl(paths.labels, gt.records)
    atomic_write_jsonl(paths.oracle_rejects, gt.outcome_rows())
    return add_oracle_usage(paths, gt)


@dataclass
class LabelFiles:
    """What the catalogue records for the ground truth: ``journal`` (mode llm) first, then ``items``, each made
    from ``inputs``."""

    journal: Path | None
    items: list[Path | NewArtifact]
    inputs: list[Path]


def label_files(defn: FilterDefinition, paths: FilterPaths) -> LabelFiles:
    """In mode llm the journal (one line per answer, each with the request_key of its llm_calls row) is an input
    of the labels, so lineage of anything made from the labels reaches the oracle calls; in mode labels the
    labels file is an input."""
    inputs = definition_files(defn)
    rest: list[Path | NewArtifact] = [paths.oracle_rejects, paths.oracle_usage]
    if defn.config.oracle.mode == "llm" and paths.oracle_journal.exists():
        labels = NewArtifact(paths.labels, inputs=[InputRef(paths.oracle_journal, "filter_ground_truth")])
        return LabelFiles(paths.oracle_journal, [labels, *rest], inputs)
    return LabelFiles(None, [paths.labels, *rest], [*inputs, defn.resolve(defn.config.oracle.labels)])


def add_oracle_usage(paths: FilterPaths, gt: GroundTruth) -> tuple[dict[str, Any], dict]:
    """This run's oracle usage added to ``oracle_usage.json`` (a rerun answered by the journal adds nothing,
    so the cost per document stays what the labels really cost): (the totals, this run's oracle)."""
    oracle = next((r["oracle"] for r in gt.records if r.get("oracle")), {})
    asked = int(gt.usage.get("requests", 0) - gt.usage.get("cache_hits", 0)) if gt.usage else 0
    old = json.loads(paths.oracle_usage.read_text(encoding="utf-8")) if paths.oracle_usage.exists() else {}
    out = accumulate_usage(old, gt.usage or {}, asked, gt.seconds if asked else 0.0, oracle)
    atomic_write_text(paths.oracle_usage, json.dumps(out, indent=2))
    return out, oracle


def usage_figures(totals: dict[str, Any], seconds: float) -> dict[str, Any]:
    """This run's oracle seconds and the cost of the labels over every run: in all, and per 1,000 documents."""
    total = totals["total"]
    per_doc = (total["cost_usd"] / total["documents_asked"] * 1000) if total["documents_asked"] else None
    return {"oracle_seconds": round(seconds, 2), "total_oracle_cost_usd": round(float(total["cost_usd"]), 6),
            "oracle_usd_per_1000_documents": round(per_doc, 4) if per_doc is not None else "n/a"}


# ------------------------------------------------------------------------------------------ training

def train_spec(defn: FilterDefinition, paths: FilterPaths) -> TrainFilterSpec:
    """The training step of this version (its settings from config.yaml's ``training``, paths under the data
    folder); a training setting the trainer refuses is a :class:`FilterConfigError` naming config.yaml."""
    s = defn.config.scoring
    try:
        cfg = FilterTrainConfig(**{"score_min": s.min_score, "score_max": s.max_score,
                                   **defn.config.training.trainer_fields()})
    except ValueError as exc:
        raise FilterConfigError(f"{defn.folder / 'config.yaml'}: training: {exc}") from exc
    rel = data_relative
    return TrainFilterSpec(
        config=cfg, filter_name=defn.name, filter_version=defn.config.filter.version,
        dimension_names=defn.dimensions, weights=[s.dimensions[d].weight for d in defn.dimensions],
        tiers=_tiers(defn), threshold=_binary_threshold(defn),
        train=rel(paths.split_file("train")), val=rel(paths.split_file("val")), test=rel(paths.split_file("test")),
        version_dir=rel(paths.version_dir), embed_cache=EMBED_CACHE)


def run_record(defn: FilterDefinition, spec: TrainFilterSpec, result: FilterTrainResult,
               table: dict[str, dict[str, Any]], ran_on: str) -> dict[str, dict[str, Any]]:
    """The catalogue ``runs`` row of a trained model: its ``params`` and ``metrics``."""
    return {"params": {"filter": defn.name, "version": defn.config.filter.version,
                       "training": spec.config.fingerprint(), "dimensions": defn.dimensions,
                       "splits": {k: getattr(spec, k) for k in ("train", "val", "test")}},
            "metrics": {"ran_on": ran_on, "device": result.device, "kept": result.mode,
                        "candidates": {c.name: {"val_mae": c.val_mae, "test_mae": c.test_mae} for c in result.candidates
                                       if c.status == "trained"},
                        "best_epoch": result.best_epoch,
                        "best_val_mae": result.best_val_mae, "test": table,
                        "train_seconds": result.train_seconds, "fingerprint": result.fingerprint}}


def train_result(paths: FilterPaths) -> FilterTrainResult:
    return FilterTrainResult.model_validate_json((paths.model_dir / RESULT_FILE).read_text(encoding="utf-8"))


def judged(defn: FilterDefinition, paths: FilterPaths, result: FilterTrainResult) -> dict[str, dict[str, Any]]:
    """The test table again with the filter's own rules (caps on the text, gatekeepers), not only the
    weighted sum the training step judges with."""
    by_id = {r["id"]: r for r in read_jsonl(paths.split_file("test"))}
    texts = [document_text(by_id[i]) for i in result.test_predictions.ids]
    dims, scoring = defn.dimensions, defn.config.scoring

    def overall(matrix: np.ndarray) -> np.ndarray:
        return np.asarray([score(dict(zip(dims, map(float, row), strict=True)), scoring, text=texts[i]).overall
                           for i, row in enumerate(np.asarray(matrix))])

    return judge_predictions(result.test_predictions, dims, overall=overall, tiers=_tiers(defn),
                             threshold=_binary_threshold(defn))


def write_test_results(paths: FilterPaths, table: dict[str, dict[str, Any]], result: FilterTrainResult,
                       ran_on: str) -> Path:
    return atomic_write_text(paths.test_results, json.dumps(
        {"rules": "filter rules (caps, gatekeepers)", "results": table,
         "weighted_sum_results": result.test, "ran_on": ran_on}, indent=2))


def read_test_results(paths: FilterPaths) -> dict[str, dict[str, Any]]:
    """The judged test table ``filter_model`` wrote."""
    return json.loads(paths.test_results.read_text(encoding="utf-8"))["results"]


# ------------------------------------------------------------------------------------------- report

def scorer_speed(paths: FilterPaths, n: int = 48) -> float | None:
    """Documents/s of the trained scorer on val+test texts (after one warm-up batch), for the cost table."""
    rows = [*read_jsonl(paths.split_file("val")), *read_jsonl(paths.split_file("test"))]
    include = model_reads_titles(paths)
    texts = [example_text(r, include) for r in rows][:n]
    if not texts:
        return None
    scorer = Scorer(paths.model_dir)
    scorer.predict(texts[:4])
    start = time.perf_counter()
    scorer.predict(texts)
    return round(len(texts) / max(time.perf_counter() - start, 1e-9), 2)


def ground_truth_sentence(defn: FilterDefinition, oracle: dict, n_labels: int) -> str:
    """Where the labels came from, in words: the labels file (no oracle asked), or the oracle that scored them."""
    if defn.config.oracle.mode == "labels":
        return (f"Ground truth: the labels file {Path(defn.config.oracle.labels).name} ({n_labels} labels joined to "
                "the version's documents the prefilter passed); no oracle was asked.")
    who = " ".join(str(v) for v in (oracle.get("provider"), oracle.get("model")) if v) or "the oracle"
    return f"Ground truth: {who} scored {n_labels} documents against the filter's prompt."


def report_inputs(defn: FilterDefinition, paths: FilterPaths, *, history: list[dict], metadata: dict,
                  table: dict[str, dict[str, Any]], oracle: dict, costs: Sequence[CostLine],
                  test_examples: int) -> ReportInputs:
    """What the .docx report says, from the definition, the training outputs and the labels."""
    labels = read_jsonl(paths.labels)
    prefilter_rules = ", ".join(f"{r.kind} ({r.reason})" for r in defn.prefilter.rules)
    return ReportInputs(
        filter_name=defn.name, filter_version=defn.config.filter.version, description=defn.config.filter.description,
        dims=_dims_table(defn), tiers=_tiers(defn), history=history, metadata=metadata, results=table,
        plots_dir=paths.plots_dir,
        oracle=("the labels file" if defn.config.oracle.mode == "labels" else
                " ".join(str(v) for v in (oracle.get("provider"), oracle.get("model")) if v) or "the oracle"),
        ground_truth=ground_truth_sentence(defn, oracle, len(labels)),
        prefilter=f"Rules in order, the first that decides wins: {prefilter_rules}." if prefilter_rules else "",
        label_counts=dict(Counter(r["tier"] for r in labels)), costs=costs,
        notes=["The test table judges overall and tier with the filter's own rules (caps on the text, gatekeepers); "
               f"predicted scores carry no content type. Test split: {test_examples} documents.",
               "Training-split metrics per epoch come from the training pass itself (each batch's predictions as "
               "it was trained, dropout on); validation is predicted in eval mode."])


@dataclass
class FilterReport:
    history: list[dict]
    table: dict[str, dict[str, Any]]
    costs: list[CostLine]
    scorer_docs_per_s: float | None
    curve_of: str = ""
    """The candidate whose epochs ``history`` holds (the kept one, else the best trained by epochs)."""
    levels: Levels | None = None
    candidates: list[dict] | None = None


def curves(result: FilterTrainResult) -> tuple[str, list[dict]]:
    """The candidate whose curves the report draws: the kept one when it trained by epochs, else the one with
    the lowest validation MAE among those that did (none: ridge alone)."""
    by_epochs = [c for c in result.candidates if c.history]
    if not by_epochs:
        return "", []
    chosen = next((c for c in by_epochs if c.kept), None) or min(by_epochs, key=lambda c: c.val_mae or 0.0)
    return chosen.name, chosen.history


def write_report(defn: FilterDefinition, paths: FilterPaths) -> FilterReport:
    """The plots, ``training_summary.txt`` and the .docx report of a trained version: the candidates, the judged
    test table, and the cost of the oracle (its usage summed over runs) against the scorer's (its measured
    speed)."""
    metadata = json.loads(paths.training_metadata.read_text(encoding="utf-8"))
    table = read_test_results(paths)
    result = train_result(paths)
    curve_of, history = curves(result)
    ridge_val = next((c.val_mae for c in result.candidates if c.name == "ridge"), None)
    levels = Levels(result.mean_val_mae, ridge_val)
    preds = result.test_predictions
    write_plots(history, defn.dimensions, paths.plots_dir, title=f"{defn.name} v{defn.config.filter.version}",
                levels=levels, test=(preds.target, preds.predictions["model"]), curve_of=curve_of)
    usage = json.loads(paths.oracle_usage.read_text(encoding="utf-8")) if paths.oracle_usage.exists() else {}
    oracle, speed = usage.get("oracle", {}), scorer_speed(paths)
    costs = cost_lines(usage.get("total", {}), oracle, labels_mode=defn.config.oracle.mode == "labels",
                       scorer_docs_per_s=speed, reference=REFERENCE_ORACLE, dollars_per_hour=SCORER_DOLLARS_PER_HOUR)
    write_docx(report_inputs(defn, paths, history=history, metadata=metadata, table=table, oracle=oracle,
                             costs=costs, test_examples=result.test_examples), paths.report_docx)
    return FilterReport(history, table, costs, speed, curve_of, levels, metadata.get("candidates"))


# ------------------------------------------------------------------------------------------- upload

def hub_repo(defn: FilterDefinition, override: str | None = None) -> str:
    """The Hub repository: ``override``, else ``deployment.hub_repo``, else ``distillery-filter-<name>-v<N>``."""
    return override or defn.config.deployment.hub_repo or f"distillery-filter-{defn.name}-v{defn.version}"


def filter_card(defn: FilterDefinition, paths: FilterPaths, repo_id: str) -> str:
    return render_filter_card(
        repo_id=repo_id, filter_name=defn.name, filter_version=defn.config.filter.version,
        description=defn.config.filter.description, dims=_dims_table(defn), tiers=_tiers(defn),
        metadata=json.loads(paths.training_metadata.read_text(encoding="utf-8")), results=read_test_results(paths))


def stage_upload(defn: FilterDefinition, paths: FilterPaths, card: str) -> Path:
    """The folder the Hub gets (written atomically): model/, history, metadata, test results, the definition
    files and the card as README.md."""
    with atomic_path(paths.upload_dir, is_dir=True) as tmp:
        shutil.copytree(paths.model_dir, tmp / "model")
        for file in (paths.training_history, paths.training_metadata, paths.test_results):
            shutil.copy2(file, tmp / file.name)
        for file in definition_files(defn):  # prompt.md is optional in labels mode
            shutil.copy2(file, tmp / file.name)
        atomic_write_text(tmp / "README.md", card)
    return paths.upload_dir


# ------------------------------------------------------------------------------------------- scores

def score_documents(defn: FilterDefinition, paths: FilterPaths, documents: Sequence[dict], *, runner: ShardRunner,
                    shard_size: int, on_shard: Callable[[int, int], None] | None = None) -> ScoreRun:
    """Every document through the trained scorer in journalled shards (resumable), the filter's own rules
    applied to what comes back; the caps read the scorer's input text (title and content)."""
    scoring = defn.config.scoring

    def rules(scores: dict[str, float], text: str):
        return score(scores, scoring, text=text)

    include = model_reads_titles(paths)
    return score_dataset(documents, paths.scores_dir, runner=runner, rules=rules, dims=defn.dimensions,
                         shard_size=shard_size, on_shard=on_shard, text_of=lambda d: example_text(d, include))


def model_reads_titles(paths: FilterPaths) -> bool:
    """Whether the trained scorer reads ``title\\n\\ncontent`` or the content alone (``include_title`` in its
    ``filter_model.json``; models from before that field read titles)."""
    meta = json.loads((paths.model_dir / SCORER_FILE).read_text(encoding="utf-8"))
    return bool(meta.get("include_title", True))
