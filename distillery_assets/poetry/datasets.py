"""Gate the task records, map them to one role's ChatML examples, split them and write the files.

``build_role_dataset`` is what the ``educator_dataset`` / ``poet_dataset`` assets call: for each task it
applies the quality gate (rejects with reasons go to ``data/poetry/rejects/quality_gate_<role>.jsonl``),
turns the passing records into ChatML examples (:func:`user_assistant` per task) and hands them to the shared
:func:`distillery_assets.datasets.chatml.build_split` (dedupe, the one seeded split rule, atomic files):
``data/poetry/datasets/<role>/{train,valid}.jsonl`` plus ``split.json``. The educator's system turn is the
condensed persona; the poet's is ``poet_system.txt``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distillery_assets.datasets import chatml
from distillery_assets.io import atomic_write_jsonl, read_jsonl
from distillery_assets.poetry.generate import poetry_dir
from distillery_assets.poetry.quality_gate import Gate, reason_counts
from distillery_assets.poetry.settings import PoetryConfig

ROLES = ("educator", "poet")
SPLIT_FILES = {"train": "train.jsonl", "val": "valid.jsonl"}


def _fenced(text: str) -> str:
    return f"---\n{text}\n---"


def user_assistant(task: str, rec: dict) -> tuple[str, str]:
    """The (user, assistant) turn pair for one gated record of ``task``."""
    if task == "critique":
        return rec["poem"]["text"], rec["critique"]
    if task == "brief":
        return rec["user_request"], rec["brief"]
    if task == "lesson":
        return rec["question"], rec["lesson"]
    if task == "autopsy":
        return rec["poem"]["text"], rec["autopsy"]
    if task == "comparison":
        return f"Poem A:\n{_fenced(rec['poem_a']['text'])}\n\nPoem B:\n{_fenced(rec['poem_b']['text'])}", rec["comparison"]
    if task == "dialogue":
        user = (f"Original poem:\n{_fenced(rec['poem']['text'])}\n\nYour critique:\n{_fenced(rec['critique'])}"
                f"\n\nTheir revision:\n{_fenced(rec['revision'])}")
        return user, rec["follow_up"]
    if task == "poet_pair":
        return rec["brief"], rec["poem"]
    raise KeyError(f"unknown poetry task {task!r}")


def task_examples(task: str, records: Iterable[dict], system: str) -> list[dict]:
    """ChatML examples of one task's records (a record with an empty turn is skipped)."""
    return chatml.to_examples(records, lambda rec: user_assistant(task, rec), system)


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
    split_info: dict = field(default_factory=dict)  # the split.json written beside the files


def gate_for(cfg: PoetryConfig) -> Gate:
    return Gate(cfg.pipeline.quality_gate, cfg.banned_phrases)


def split_path(role: str, side: str) -> Path:
    """``data/poetry/datasets/<role>/train.jsonl`` (``side`` ``train``) or ``valid.jsonl`` (``val``)."""
    return poetry_dir("datasets", role) / SPLIT_FILES[side]


def example_tokens(example: dict, count_tokens) -> int:
    """Tokens of one ChatML example as the dataset check counts them (content plus the template's turns)."""
    return sum(count_tokens(m["content"]) + chatml.TURN_OVERHEAD for m in example["messages"])


def _fit(task: str, records: list[dict], system: str, count_tokens, max_seq: int | None):
    """(examples, rejected): a record whose example is longer than the role's ``max_seq`` is a reject
    ``too_long`` (training would cut it, and a poem cut short teaches no ending), not a training example."""
    examples, rejected = [], []
    for rec in records:
        ex = task_examples(task, [rec], system)
        n = example_tokens(ex[0], count_tokens) if ex and count_tokens and max_seq else 0
        if n > (max_seq or 0):
            rejected.append({**rec, "_task": task, "_reject_reasons": [f"too_long: {n} tokens > max_seq {max_seq}"]})
        else:
            examples += ex
    return examples, rejected


def build_role_dataset(cfg: PoetryConfig, role: str, task_files: dict[str, Path | Sequence[Path]],
                       count_tokens=None) -> RoleDataset:
    """``task_files`` maps task name (``critique``, ``brief``, ... ``poet_pair``) to its records file, or to
    several (the poet's pairs: the generated ones and those from the users' feedback, ``tutor_feedback``). With
    ``count_tokens``, examples longer than the role's training ``max_seq`` are rejects ``too_long``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    system = cfg.persona_condensed if role == "educator" else cfg.poet_system
    gate = gate_for(cfg)
    max_seq = chatml.max_seq_for(role) if count_tokens else None
    examples, rejected, per_task = [], [], {}
    for task, paths in task_files.items():
        files = [paths] if isinstance(paths, (str, Path)) else list(paths)
        by_file = {Path(p).name: read_jsonl(p) for p in files}
        records = [rec for recs in by_file.values() for rec in recs]
        passed, failed = gate.split(task, records, verse=True)
        fitting, too_long = _fit(task, passed, system, count_tokens, max_seq)
        failed += too_long
        per_task[task] = {"records": len(records), "passed": len(passed) - len(too_long), "rejected": len(failed)}
        if len(files) > 1:
            per_task[task]["records_per_file"] = {name: len(recs) for name, recs in by_file.items()}
        examples += fitting
        rejected += failed
    reject_path = poetry_dir("rejects", f"quality_gate_{role}.jsonl")
    atomic_write_jsonl(reject_path, rejected)
    ds = cfg.pipeline.datasets
    train_path, valid_path = split_path(role, "train"), split_path(role, "val")
    try:
        res = chatml.build_split(examples, train_path=train_path, valid_path=valid_path,
                                 meta_path=train_path.with_name("split.json"), seed=ds.seed,
                                 valid_fraction=ds.valid_fraction, max_samples=ds.max_samples)
    except chatml.DatasetTooSmall as exc:
        raise chatml.DatasetTooSmall(
            f"{role} dataset: {exc} after the quality gate (per task: {per_task}; reasons: "
            f"{reason_counts(rejected)}; reject log {reject_path})") from exc
    return RoleDataset(role, train_path, valid_path, reject_path, res.train, res.valid, per_task,
                       reason_counts(rejected), res.duplicates_removed, res.info)


def check_role_split(cfg: PoetryConfig, role: str, side: str, count_tokens=None) -> chatml.SplitCheck:
    """The dataset check of one side of a role's split, against the role's training ``max_seq``."""
    other = "val" if side == "train" else "train"
    return chatml.check_split_file(split_path(role, side), split_path(role, other),
                                   max_seq=chatml.max_seq_for(role), count_tokens=count_tokens,
                                   max_over_length_fraction=cfg.pipeline.datasets.max_over_length_fraction)
