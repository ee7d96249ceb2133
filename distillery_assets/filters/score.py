"""Batch scoring with a trained filter scorer: per document the dimension scores, the overall score, the
tier and the caps/gatekeepers that applied; streamed in shards, resumable, throughput measured.

* :class:`Scorer` loads a version's ``model/`` (any candidate: ridge, MLP, frozen or fine-tuned head, LoRA), optionally int8
  (torch dynamic quantization of the Linear layers), and predicts an (n, dims) matrix. Texts are
  batched by length so a batch pads little; :meth:`Scorer.batches` hands out exactly those tokenized
  batches (the benchmark times the bare ``model(**batch)`` forward on them).
* :func:`score_shard` is the unit of work, a pure function of (model folder, shard rows) -> one
  ``{"id", "scores"}`` per row. It runs in process or as the Modal function ``score_shard`` of
  ``resources/modal_app.py`` fanned out with ``.map`` (``ComputeResource.shard_runner``).
* :func:`score_dataset` streams rows into shards, sends waves of shards to a runner, applies the filter's
  rules to what comes back (so rules never travel), writes each shard's results atomically and records
  it in a journal; a rerun skips every shard already journalled with the same rows, and the final
  ``scores.jsonl`` is the shards merged in order.

``rules`` is any callable ``rules(scores: dict[str, float], text: str)`` returning an object or a mapping
with ``overall``, ``tier`` and ``applied`` (filters-lib's ``scoring.score(scores, cfg.scoring, text=...)``
fits with a lambda); :func:`weighted_rules` is the plain weighted-sum fallback.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillery_assets.device import pick_device
from distillery_assets.filters.embed import mean_pool, quantize_int8
from distillery_assets.filters.metrics import tier_of
from distillery_assets.filters.sources import MODEL_SEP, document_text
from distillery_assets.io import JsonlError, atomic_path, atomic_write_text, iter_jsonl
from distillery_assets.io.hashing import new_sha256

log = logging.getLogger(__name__)

SCORES_FILE = "scores.jsonl"
JOURNAL_FILE = "journal.jsonl"
SUMMARY_FILE = "summary.json"
SHARDS_DIR = "shards"
DEFAULT_SHARD = 512
DEFAULT_BATCH = 32

Rules = Callable[[dict[str, float], str], Any]
ShardRunner = Callable[[list[list[dict[str, Any]]]], Iterable[list[dict[str, Any]]]]
"""Takes a wave of shards (lists of ``{"id", "text"}``), yields each shard's results in the same order."""


# ------------------------------------------------------------------------------------------------ scorer

class Scorer:
    """A trained scorer from ``model_dir`` (``filter_model.json`` says how it was trained)."""

    def __init__(self, model_dir: str | Path, *, device: str | None = None, quantize: str | None = None,
                 max_length: int | None = None, threads: int | None = None):
        from distillery_assets.filters.train import SCORER_FILE
        from distillery_assets.threads import apply_torch_threads

        self.model_dir = Path(model_dir)
        meta_path = self.model_dir / SCORER_FILE
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{meta_path}: not a trained filter model (run filter_model first)") from exc
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', not {quantize!r}")
        apply_torch_threads(threads)  # None: the thread policy's (distillery_assets.threads)
        self.mode = self.meta["mode"]
        self.dims: list[str] = list(self.meta["dimension_names"])
        self.max_length = int(max_length or self.meta["max_length"])
        self.quantize = quantize
        self.device = "cpu" if quantize else pick_device(device)
        self.clip = tuple(self.meta["clip"]) if self.meta.get("clip") else None
        self._load()

    def _load(self) -> None:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        if self.mode == "lora":
            from peft import PeftModel
            from transformers import AutoModelForSequenceClassification

            base = AutoModelForSequenceClassification.from_pretrained(
                self.meta["base_model"], num_labels=len(self.dims), problem_type="regression")
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            base.config.pad_token_id = self.tokenizer.pad_token_id
            model = PeftModel.from_pretrained(base, str(self.model_dir)).merge_and_unload().eval()
            self.encoder = model
            self.head = None
        else:
            self.encoder = AutoModel.from_pretrained(str(self.model_dir)).eval()
            tensors = load_file(str(self.model_dir / self.meta.get("head", "head.safetensors")))
            self.head = {k: v.float() for k, v in tensors.items()}
        if self.quantize == "int8":
            self.encoder = quantize_int8(self.encoder)
        else:
            self.encoder.to(self.device)
            if self.head is not None:
                self.head = {k: v.to(self.device) for k, v in self.head.items()}
        self._torch = torch

    @property
    def model(self) -> Any:
        """The bare transformer whose ``model(**batch)`` forward is the floor of scoring cost."""
        return self.encoder

    def batches(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH) -> list[tuple[list[int], dict[str, Any]]]:
        """``(indices, tokenized batch)`` pairs: texts ordered by length, cut into batches, tokenized."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            out.append((idx, {k: v.to(self.device) for k, v in batch.items()
                              if k in ("input_ids", "attention_mask", "token_type_ids")}))
        return out

    def forward(self, batch: dict[str, Any]) -> Any:
        """Scores (batch, dims) of one tokenized batch."""
        out = self.encoder(**batch)
        if self.head is None:
            return out.logits
        h = self.head
        pooled = mean_pool(out.last_hidden_state, batch["attention_mask"], bool(self.meta.get("normalize", True)))
        feats = (pooled - h["feature_mean"]) / h["feature_std"] if "feature_mean" in h else pooled
        if "w1" in h:  # the MLP head: Linear, GELU, Linear
            hidden = self._torch.nn.functional.gelu(feats @ h["w1"].T + h["b1"])
            return hidden @ h["w2"].T + h["b2"]
        return feats @ h["weight"].T + h["bias"]

    @property
    def include_title(self) -> bool:
        """Whether the model reads ``title\\n\\ncontent`` (True, the seed's input) or the content alone."""
        return bool(self.meta.get("include_title", True))

    def text_of(self, document: Mapping[str, Any]) -> str:
        """A document's input text as this model was trained on it (with or without its title)."""
        return document_text(document, MODEL_SEP) if self.include_title else str(document.get("content") or "")

    def predict(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """(n, dims) predictions in the order of ``texts`` (clipped to the scale when the model says so)."""
        out = np.zeros((len(texts), len(self.dims)), dtype=np.float32)
        with self._torch.inference_mode():
            for idx, batch in self.batches(texts, batch_size):
                out[idx] = self.forward(batch).float().cpu().numpy()
        return np.clip(out, *self.clip) if self.clip else out


_SCORERS: dict[tuple[str, str | None, int | None], Scorer] = {}


def cached_scorer(model_dir: str | Path, quantize: str | None = None, max_length: int | None = None) -> Scorer:
    """One :class:`Scorer` per (folder, quantization, max length) per process (a Modal container scores
    many shards with the model it loaded once)."""
    key = (str(Path(model_dir).resolve()), quantize, max_length)
    if key not in _SCORERS:
        _SCORERS[key] = Scorer(model_dir, quantize=quantize, max_length=max_length)
    return _SCORERS[key]


def score_shard(model_dir: str | Path, rows: Sequence[Mapping[str, Any]], *, quantize: str | None = None,
                max_length: int | None = None, batch_size: int = DEFAULT_BATCH) -> list[dict[str, Any]]:
    """The unit of work: ``rows`` (``{"id", "text"}``) -> ``[{"id", "scores": {dim: value}}]`` in order."""
    scorer = cached_scorer(model_dir, quantize, max_length)
    texts = [str(r["text"]) for r in rows]
    pred = scorer.predict(texts, batch_size)
    return [{"id": r["id"], "scores": {d: round(float(v), 4) for d, v in zip(scorer.dims, p, strict=True)}}
            for r, p in zip(rows, pred, strict=True)]


def in_process_runner(model_dir: str | Path, **kw: Any) -> ShardRunner:
    def run(wave: list[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
        for shard in wave:
            yield score_shard(model_dir, shard, **kw)

    run.parallelism = 1  # type: ignore[attr-defined]
    return run


def modal_map_runner(function: Any, model_rel: str, *, parallelism: int = 8, **kw: Any) -> ShardRunner:
    """Fan a wave of shards out with ``function.map`` (the deployed ``score_shard`` of modal_app.py, whose
    arguments are (model path relative to the volume, rows, options)); results come back in order."""
    def run(wave: list[list[dict[str, Any]]]) -> Iterable[list[dict[str, Any]]]:
        return function.map([model_rel] * len(wave), wave, [kw] * len(wave), order_outputs=True)

    run.parallelism = parallelism  # type: ignore[attr-defined]
    return run


# ------------------------------------------------------------------------------------------------ rules

def weighted_rules(weights: Mapping[str, float], tiers: Sequence[tuple[str, float]] | Mapping[str, float]) -> Rules:
    """Overall = weighted sum, tier by descending threshold, nothing capped (when no filter rules are given)."""
    def rules(scores: dict[str, float], text: str = "") -> dict[str, Any]:
        overall = sum(scores[d] * w for d, w in weights.items())
        return {"overall": round(overall, 4), "tier": tier_of(overall, tiers), "applied": []}

    return rules


def _field(outcome: Any, name: str) -> Any:
    return outcome[name] if isinstance(outcome, Mapping) else getattr(outcome, name)


# --------------------------------------------------------------------------------------- dataset scoring

@dataclass
class ScoreRun:
    out_dir: str
    scores_file: str
    documents: int
    shards: int
    shards_scored: int
    shards_reused: int
    scored_documents: int
    seconds: float
    docs_per_s: float
    tiers: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    mean_overall: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digest(rows: Sequence[Mapping[str, Any]]) -> str:
    h = new_sha256()
    for r in rows:
        h.update(str(r["id"]).encode())
        h.update(b"\0")
        h.update(new_sha256(str(r["text"]).encode()).digest())
    return h.hexdigest()[:24]


def _read_journal(path: Path) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return done
    for _, entry in iter_jsonl(path, on_error="yield"):
        if isinstance(entry, JsonlError):
            continue  # a torn last line after a kill: that shard is simply done again
        try:
            done[int(entry["shard"])] = entry
        except (ValueError, KeyError, TypeError):
            continue  # an entry without a usable shard number: likewise
    return done


def _shards(rows: Iterable[Mapping[str, Any]], size: int, text_of: Callable[[Mapping[str, Any]], str],
            id_field: str) -> Iterator[list[dict[str, Any]]]:
    shard: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        ident = row.get(id_field)
        if ident is None:
            raise ValueError(f"row {n}: no {id_field!r} field")
        shard.append({"id": str(ident), "text": text_of(row)})
        if len(shard) == size:
            yield shard
            shard = []
    if shard:
        yield shard


def score_dataset(rows: Iterable[Mapping[str, Any]], out_dir: str | Path, *, runner: ShardRunner,
                  rules: Rules, dims: Sequence[str] | None = None, shard_size: int = DEFAULT_SHARD,
                  text_of: Callable[[Mapping[str, Any]], str] | None = None, id_field: str = "id",
                  on_shard: Callable[[int, int], None] | None = None) -> ScoreRun:
    """Score every row (``id`` + text: ``text_of(row)``, by default the scorer's input
    ``document_text(row, MODEL_SEP)``) into ``out_dir/scores.jsonl``. Resumable: shards already journalled with
    the same rows are kept."""
    text_of = text_of or (lambda row: document_text(row, MODEL_SEP))
    out = Path(out_dir)
    shard_dir = out / SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    journal_path = out / JOURNAL_FILE
    journal = _read_journal(journal_path)
    parallel = max(1, int(getattr(runner, "parallelism", 1)))
    tiers: Counter[str] = Counter()
    applied: Counter[str] = Counter()
    overall_sum, documents, scored_docs, reused, scored, total_shards = 0.0, 0, 0, 0, 0, 0
    seconds = 0.0
    shard_files: list[Path] = []

    def shard_path(i: int) -> Path:
        return shard_dir / f"shard-{i:06d}.jsonl"

    def tally(path: Path) -> None:
        nonlocal overall_sum
        for _, rec in iter_jsonl(path):
            tiers[rec["tier"]] += 1
            for a in rec["applied"]:
                applied[a] += 1
            overall_sum += rec["overall"]

    with open(journal_path, "a", encoding="utf-8") as jfh:
        pending: list[tuple[int, list[dict[str, Any]], str]] = []

        def flush() -> None:
            nonlocal scored_docs, scored, seconds
            if not pending:
                return
            start = time.perf_counter()
            results = runner([rows_ for _, rows_, _ in pending])
            for (index, shard_rows, digest), result in zip(pending, results, strict=True):
                if len(result) != len(shard_rows):
                    raise RuntimeError(f"shard {index}: {len(result)} results for {len(shard_rows)} rows")
                lines = []
                for row, res in zip(shard_rows, result, strict=True):
                    if str(res["id"]) != row["id"]:
                        raise RuntimeError(f"shard {index}: result for {res['id']!r} where {row['id']!r} was sent")
                    if dims is not None and list(res["scores"]) != list(dims):
                        raise RuntimeError(f"shard {index}: scores for {list(res['scores'])}, expected {list(dims)}")
                    outcome = rules(dict(res["scores"]), row["text"])
                    lines.append(json.dumps({"id": row["id"], "scores": res["scores"],
                                             "overall": float(_field(outcome, "overall")),
                                             "tier": _field(outcome, "tier"),
                                             "applied": list(_field(outcome, "applied"))}, ensure_ascii=False))
                atomic_write_text(shard_path(index), "\n".join(lines) + "\n")
                jfh.write(json.dumps({"shard": index, "rows": len(shard_rows), "digest": digest}) + "\n")
                jfh.flush()
                os.fsync(jfh.fileno())
                tally(shard_path(index))
                scored_docs += len(shard_rows)
                scored += 1
                if on_shard is not None:
                    on_shard(index, len(shard_rows))
            seconds += time.perf_counter() - start
            pending.clear()

        for index, shard_rows in enumerate(_shards(rows, shard_size, text_of, id_field)):
            total_shards += 1
            documents += len(shard_rows)
            digest = _digest(shard_rows)
            shard_files.append(shard_path(index))
            entry = journal.get(index)
            if entry and entry.get("digest") == digest and shard_path(index).exists():
                reused += 1
                tally(shard_path(index))
                continue
            pending.append((index, shard_rows, digest))
            if len(pending) >= parallel:
                flush()
        flush()

    for stale in shard_dir.glob("shard-*.jsonl"):  # shards of a longer earlier dataset
        if stale not in shard_files:
            stale.unlink()
    with atomic_path(out / SCORES_FILE) as tmp:
        with open(tmp, "wb") as fh:
            for path in shard_files:
                with open(path, "rb") as src:
                    fh.write(src.read())
    run = ScoreRun(out_dir=str(out), scores_file=str(out / SCORES_FILE), documents=documents,
                   shards=total_shards, shards_scored=scored, shards_reused=reused, scored_documents=scored_docs,
                   seconds=round(seconds, 3), docs_per_s=round(scored_docs / seconds, 2) if seconds else 0.0,
                   tiers=dict(tiers), applied=dict(applied),
                   mean_overall=round(overall_sum / documents, 4) if documents else None)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(run.as_dict(), indent=2))
    return run
