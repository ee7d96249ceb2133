"""Gate the task records, build one role's ChatML dataset, split it and write the files.

``build_role_dataset`` is what the ``educator_dataset`` / ``poet_dataset`` assets call: for each task it
applies the quality gate (rejects with reasons go to ``data/poetry/rejects/quality_gate_<role>.jsonl``),
turns the passing records into ChatML examples, de-duplicates, splits (seed, valid fraction, optional
cap) and writes ``data/poetry/datasets/<role>/{train,valid}.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distillery_assets.io import atomic_write_jsonl, read_jsonl
from distillery_assets.poetry import chatml
from distillery_assets.poetry.generate import poetry_dir
from distillery_assets.poetry.quality_gate import Gate, reason_counts
from distillery_assets.poetry.settings import PoetryConfig


@dataclass
class RoleDataset:
    role: str
    train_path: Path
    valid_path: Path
    reject_path: Path
    train: list[dict]
    valid: list[dict]
    per_task: dict[str, dict] = field(default_factory=dict)  # task -> {records, passed, rejected}
    reject_reasons: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0


def gate_for(cfg: PoetryConfig) -> Gate:
    return Gate(cfg.pipeline.quality_gate, cfg.banned_phrases)


def build_role_dataset(cfg: PoetryConfig, role: str, task_files: dict[str, Path]) -> RoleDataset:
    """``task_files`` maps task name (``critique``, ``brief``, ... ``poet_pair``) to its records file."""
    if role not in ("educator", "poet"):
        raise ValueError(f"unknown role {role!r}")
    system = cfg.persona_condensed if role == "educator" else cfg.poet_system
    gate = gate_for(cfg)
    examples, rejected, per_task = [], [], {}
    for task, path in task_files.items():
        records = read_jsonl(path)
        passed, failed = gate.split(task, records)
        per_task[task] = {"records": len(records), "passed": len(passed), "rejected": len(failed)}
        examples += chatml.to_examples(task, passed, system)
        rejected += failed
    examples, dupes = chatml.dedupe(examples)
    reject_path = poetry_dir("rejects", f"quality_gate_{role}.jsonl")
    atomic_write_jsonl(reject_path, rejected)
    ds = cfg.pipeline.datasets
    try:
        train, valid = chatml.split(examples, seed=ds.seed, valid_fraction=ds.valid_fraction,
                                    max_samples=ds.max_samples)
    except chatml.DatasetTooSmall as exc:
        raise chatml.DatasetTooSmall(
            f"{role} dataset: {exc} after the quality gate (per task: {per_task}; reasons: "
            f"{reason_counts(rejected)}; reject log {reject_path})") from exc
    out = poetry_dir("datasets", role)
    train_path, valid_path = out / "train.jsonl", out / "valid.jsonl"
    atomic_write_jsonl(train_path, train)
    atomic_write_jsonl(valid_path, valid)
    return RoleDataset(role, train_path, valid_path, reject_path, train, valid, per_task, reason_counts(rejected), dupes)


def gguf_token_counter(gguf_path: Path):
    """Count tokens with a GGUF file's tokenizer (vocabulary only; no weights are loaded)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count
