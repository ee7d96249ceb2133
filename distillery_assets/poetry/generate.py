"""Run one teaching-data task end to end, given a ``complete`` callable (the LLM client).

``complete(specs, label) -> results`` must return one result per spec, in order (the Dagster layer wraps
``LLMClient.complete_batch``; tests pass a scripted fake). Each task writes its records to
``data_dir()/poetry/generated/<task>.jsonl`` and its rejects (failed or empty calls) to
``data_dir()/poetry/rejects/<task>.jsonl``, atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distillery_assets.io import atomic_write_jsonl, read_jsonl
from distillery_assets.paths import data_dir, inputs_dir, safe_child
from distillery_assets.poetry import tasks
from distillery_assets.poetry.raw_poems import Poem, Reject, load_poems, poems_from_records, read_requests
from distillery_assets.poetry.settings import PoetryConfig
from distillery_assets.poetry.tasks import Collected, PromptSpec, ResultLike

Complete = Callable[[Sequence[PromptSpec], str], list[ResultLike]]


def poetry_dir(*parts: str) -> Path:
    return data_dir().joinpath("poetry", *parts)


def poetry_inputs() -> Path:
    return inputs_dir() / "poetry"


@dataclass
class TaskOutput:
    path: Path
    records: list[dict]
    rejects: list[Reject] = field(default_factory=list)
    reject_path: Path | None = None
    requested: int = 0
    truncated: int = 0

    def summary(self) -> dict:
        return {"requested": self.requested, "records": len(self.records), "rejects": len(self.rejects),
                "truncated_at_max_tokens": self.truncated}


def _write(task: str, collected: Collected, requested: int) -> TaskOutput:
    path = safe_child(poetry_dir("generated"), f"{task}.jsonl", source=f"task {task}")
    atomic_write_jsonl(path, collected.records)
    reject_path = safe_child(poetry_dir("rejects"), f"{task}.jsonl", source=f"task {task}")
    atomic_write_jsonl(reject_path, [r.to_dict() for r in collected.rejects])
    return TaskOutput(path, collected.records, collected.rejects, reject_path, requested, collected.truncated)


def _run(task: str, specs: list[PromptSpec], complete: Complete, field_name: str, *, poem: bool = False) -> TaskOutput:
    results = complete(specs, task) if specs else []
    return _write(task, tasks.collect(specs, results, field_name, poem=poem), len(specs))


def read_poems(path: Path) -> list[Poem]:
    return poems_from_records(read_jsonl(path), str(path))


# ---- raw poems -----------------------------------------------------------------------------------------

def good_poems(cfg: PoetryConfig) -> TaskOutput:
    """Good poems from ``data/inputs/poetry/good``; bad files become rejects. No poems at all is an error."""
    poems, rejects = load_poems(poetry_inputs(), "good")
    if not poems:
        raise FileNotFoundError(f"no usable poems under {poetry_inputs() / 'good'} "
                                f"({len(rejects)} rejected: {[r.reason for r in rejects][:3]})")
    n = cfg.pipeline.volumes.good_poems
    chosen = poems if n <= 0 else poems[:n]
    records = [p.to_dict() for p in chosen]
    return _write("good_poems", Collected(records, rejects, 0), len(poems))


def bad_poems(cfg: PoetryConfig, complete: Complete) -> tuple[TaskOutput, str]:
    """The user's bad poems if ``data/inputs/poetry/bad`` has any; otherwise cliché drafts from the LLM.

    Returns the output and where the poems came from (``"inputs"`` or ``"generated"``).
    """
    poems, rejects = load_poems(poetry_inputs(), "bad")
    if poems:
        return _write("bad_poems", Collected([p.to_dict() for p in poems], rejects, 0), len(poems)), "inputs"
    specs = tasks.bad_poem_specs(cfg, cfg.pipeline.volumes.bad_poems)
    collected = tasks.collect(specs, complete(specs, "bad_poems") if specs else [], "text", poem=True)
    generated = tasks.bad_poems_from(collected)
    out = Collected([p.to_dict() for p in generated], rejects + collected.rejects, collected.truncated)
    return _write("bad_poems", out, len(specs)), "generated"


# ---- the teaching tasks --------------------------------------------------------------------------------

def critiques(cfg: PoetryConfig, complete: Complete, good: list[Poem], bad: list[Poem]) -> TaskOutput:
    return _run("critique", tasks.critique_specs(cfg, good, bad, cfg.pipeline.volumes.critiques), complete, "critique")


def briefs(cfg: PoetryConfig, complete: Complete) -> TaskOutput:
    requests = read_requests(poetry_inputs() / "requests.txt")
    return _run("brief", tasks.brief_specs(cfg, requests, cfg.pipeline.volumes.briefs), complete, "brief")


def comparisons(cfg: PoetryConfig, complete: Complete, good: list[Poem], bad: list[Poem]) -> TaskOutput:
    specs = tasks.comparison_specs(cfg, good, bad, cfg.pipeline.volumes.comparisons)
    return _run("comparison", specs, complete, "comparison")


def autopsies(cfg: PoetryConfig, complete: Complete, bad: list[Poem]) -> TaskOutput:
    return _run("autopsy", tasks.autopsy_specs(cfg, bad, cfg.pipeline.volumes.autopsies), complete, "autopsy")


def dialogues(cfg: PoetryConfig, complete: Complete, critique_records: list[dict]) -> TaskOutput:
    """T5 in two calls per dialogue: the student's revision, then the educator's follow-up."""
    rev_specs = tasks.revision_specs(cfg, critique_records, cfg.pipeline.volumes.dialogues)
    revised = tasks.collect(rev_specs, complete(rev_specs, "dialogue/revision") if rev_specs else [], "revision",
                            poem=True)
    fu_specs = tasks.follow_up_specs(cfg, revised.records)
    followed = tasks.collect(fu_specs, complete(fu_specs, "dialogue/follow_up") if fu_specs else [], "follow_up")
    merged = Collected(followed.records, revised.rejects + followed.rejects, revised.truncated + followed.truncated)
    return _write("dialogue", merged, len(rev_specs))


def lessons(cfg: PoetryConfig, complete: Complete) -> TaskOutput:
    return _run("lesson", tasks.lesson_specs(cfg, cfg.pipeline.volumes.lessons), complete, "lesson")


def poet_pairs(cfg: PoetryConfig, complete: Complete, brief_records: list[dict]) -> TaskOutput:
    specs = tasks.poet_pair_specs(cfg, brief_records, cfg.pipeline.volumes.poet_pairs)
    return _run("poet_pair", specs, complete, "poem", poem=True)
