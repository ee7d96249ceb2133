"""Run one teaching-data task end to end through the LLM task runner.

``client`` is the LLM client (the LLM resource's; tests give it a scripted provider). Each task writes its records to
``data_dir()/poetry/generated/<task>.jsonl`` and its rejects (failed calls, empty answers) to
``data_dir()/poetry/rejects/<task>.jsonl``, atomically; finished rows are journalled under
``data_dir()/poetry/journal/<task>.jsonl``, so a killed run resumes without asking again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_jsonl, read_jsonl
from distillery_assets.llm.task import TaskRun, run_task
from distillery_assets.paths import data_dir, inputs_dir, safe_child
from distillery_assets.poetry import tasks
from distillery_assets.poetry.raw_poems import Poem, load_poems, poems_from_records, read_requests
from distillery_assets.poetry.settings import PoetryConfig
from distillery_assets.poetry.tasks import Item, TeachingTask
from distillery_assets.rejects import Reject


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
    usage: dict[str, Any] = field(default_factory=dict)  # requests, cache hits, provider calls, tokens, cost

    def summary(self) -> dict:
        return {"requested": self.requested, "records": len(self.records), "rejects": len(self.rejects),
                "truncated_at_max_tokens": self.truncated, **{f"llm_{k}": v for k, v in self.usage.items()}}


@dataclass
class _Collected:
    records: list[dict]
    rejects: list[Reject]
    truncated: int = 0
    usage: dict[str, Any] = field(default_factory=dict)


def _write(task: str, collected: _Collected, requested: int) -> TaskOutput:
    path = safe_child(poetry_dir("generated"), f"{task}.jsonl", source=f"task {task}")
    atomic_write_jsonl(path, collected.records)
    reject_path = safe_child(poetry_dir("rejects"), f"{task}.jsonl", source=f"task {task}")
    atomic_write_jsonl(reject_path, [r.to_dict() for r in collected.rejects])
    return TaskOutput(path, collected.records, collected.rejects, reject_path, requested, collected.truncated,
                      collected.usage)


def ask(label: str, task: TeachingTask, rows: list[Item], client) -> _Collected:
    """Run one task; failed calls and unusable answers become rejects (never records)."""
    if not rows:
        return _Collected([], [])
    journal = safe_child(poetry_dir("journal"), label.replace("/", "__") + ".jsonl", source=f"task {label}")
    run: TaskRun = run_task(task, rows, client, journal=journal, label=f"poetry/{label}")
    where = {r.key: f"{task.name} [{r.key}]" for r in rows}
    rejects = [Reject(where[f.key], f"llm call failed: {f.reason}") for f in run.failures]
    rejects += [Reject(where[r.key], r.reason) for r in run.rejects]
    truncated = sum(getattr(run.results.get(k), "finish_reason", None) == "length" for k in run.keys)
    return _Collected(run.records, rejects, truncated, run.usage.as_dict())


def _merge(*parts: _Collected, records: list[dict]) -> _Collected:
    usage: dict[str, Any] = {}
    for part in parts:
        for k, v in part.usage.items():
            usage[k] = round(usage.get(k, 0) + v, 6)
    return _Collected(records, [r for p in parts for r in p.rejects], sum(p.truncated for p in parts), usage)


def _run(name: str, built: tuple[TeachingTask, list[Item]], client) -> TaskOutput:
    task, rows = built
    return _write(name, ask(name, task, rows, client), len(rows))


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
    return _write("good_poems", _Collected(records, rejects), len(poems))


def bad_poems(cfg: PoetryConfig, client) -> tuple[TaskOutput, str]:
    """The user's bad poems if ``data/inputs/poetry/bad`` has any; otherwise cliché drafts from the LLM.

    Returns the output and where the poems came from (``"inputs"`` or ``"generated"``).
    """
    poems, rejects = load_poems(poetry_inputs(), "bad")
    if poems:
        return _write("bad_poems", _Collected([p.to_dict() for p in poems], rejects), len(poems)), "inputs"
    task, rows = tasks.bad_poems(cfg, cfg.pipeline.volumes.bad_poems)
    asked = ask("bad_poems", task, rows, client)
    generated = [p.to_dict() for p in tasks.bad_poems_from(asked.records)]
    out = _Collected(generated, rejects + asked.rejects, asked.truncated, asked.usage)
    return _write("bad_poems", out, len(rows)), "generated"


# ---- the teaching tasks --------------------------------------------------------------------------------

def critiques(cfg: PoetryConfig, client, good: list[Poem], bad: list[Poem]) -> TaskOutput:
    return _run("critique", tasks.critiques(cfg, good, bad, cfg.pipeline.volumes.critiques), client)


def briefs(cfg: PoetryConfig, client) -> TaskOutput:
    requests = read_requests(poetry_inputs() / "requests.txt")
    return _run("brief", tasks.briefs(cfg, requests, cfg.pipeline.volumes.briefs), client)


def comparisons(cfg: PoetryConfig, client, good: list[Poem], bad: list[Poem]) -> TaskOutput:
    return _run("comparison", tasks.comparisons(cfg, good, bad, cfg.pipeline.volumes.comparisons), client)


def autopsies(cfg: PoetryConfig, client, bad: list[Poem]) -> TaskOutput:
    return _run("autopsy", tasks.autopsies(cfg, bad, cfg.pipeline.volumes.autopsies), client)


def dialogues(cfg: PoetryConfig, client, critique_records: list[dict]) -> TaskOutput:
    """T5 in two calls per dialogue: the student's revision, then the educator's follow-up."""
    rev_task, rev_rows = tasks.revisions(cfg, critique_records, cfg.pipeline.volumes.dialogues)
    revised = ask("dialogue/revision", rev_task, rev_rows, client)
    followed = ask("dialogue/follow_up", *tasks.follow_ups(cfg, revised.records), client)
    return _write("dialogue", _merge(revised, followed, records=followed.records), len(rev_rows))


def lessons(cfg: PoetryConfig, client) -> TaskOutput:
    return _run("lesson", tasks.lessons(cfg, cfg.pipeline.volumes.lessons), client)


def verse_poems() -> tuple[list[Poem], list[Reject]]:
    """The shipped public-domain verse under ``data/inputs/poetry/verse`` (targets of the poet's pairs)."""
    return load_poems(poetry_inputs(), "verse")


def poet_pairs(cfg: PoetryConfig, client, brief_records: list[dict]) -> TaskOutput:
    """Brief -> poem pairs of two kinds, in one file: the LLM's poem for each T2 brief, and, for each of
    ``verse_pairs`` shipped poems, the brief the LLM writes for that poem (the poem is the target)."""
    vol = cfg.pipeline.volumes
    gen_task, gen_rows = tasks.poet_pairs(cfg, brief_records, vol.poet_pairs)
    written = ask("poet_pair", gen_task, gen_rows, client)
    poems, unreadable = verse_poems() if vol.verse_pairs else ([], [])
    verse_task, verse_rows = tasks.verse_briefs(cfg, poems, vol.verse_pairs)
    grounded = ask("poet_pair/verse_brief", verse_task, verse_rows, client)
    merged = _merge(written, grounded, records=written.records + grounded.records)
    merged.rejects += unreadable
    return _write("poet_pair", merged, len(gen_rows) + len(verse_rows))
