"""Missing ``.corpus`` files as one LLM task: a prompt per file, the answer written the moment it arrives.

``CorpusWriting`` is the task (plain-text response; ``prompt`` builds the request, ``parse`` keeps a
non-empty answer). :func:`generate_missing` runs it through the LLM task runner, which streams answers
from the client (the LLM resource's client owns concurrency, limits, retries and the response cache) and
writes each file atomically as its answer arrives, so a run killed mid-way has on disk exactly what it was
paid for, with complete files only, and the next run asks only for the files still missing (the answers
already received are in the cache).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distillery_assets.corpus.prompts_file import CorpusTask
from distillery_assets.corpus.quality import word_count
from distillery_assets.io import atomic_write_text
from distillery_assets.llm import ChatMessage, LLMRequest, LLMResult
from distillery_assets.llm.task import LLMTask, Reject, run_task

SYSTEM_PROMPT = (
    "You write passages for a text corpus that will teach a language model to write well. "
    "Answer with the passage alone, as plain prose paragraphs: no preface or closing remarks, "
    "no notes about the request, no markdown, and a title only when the piece would naturally carry one."
)
TEMPERATURE = 0.8
MAX_TOKENS = 4096


def build_request(task: CorpusTask, *, model: str | None, tag: str, max_tokens: int = MAX_TOKENS,
                  accept_truncated: bool = False) -> LLMRequest:
    return LLMRequest(
        messages=[ChatMessage(role="system", content=SYSTEM_PROMPT), ChatMessage(role="user", content=task.prompt)],
        temperature=TEMPERATURE,
        max_tokens=max_tokens,
        model=model,
        accept_truncated=accept_truncated,
        tag=tag,
    )


class CorpusWriting(LLMTask[CorpusTask]):
    """One ``.corpus`` file per row: the prompt from prompts.txt in, the passage out."""

    name = "corpus"
    ordered = False  # files are independent: write each one as soon as its answer arrives

    def __init__(self, *, model: str | None = None, tag: str = "corpus", max_tokens: int = MAX_TOKENS,
                 accept_truncated: bool = False):
        self.model, self.tag, self.max_tokens = model, tag, max_tokens
        self.accept_truncated = accept_truncated

    def key(self, row: CorpusTask) -> str:
        return str(row.path)

    def prompt(self, row: CorpusTask) -> LLMRequest:
        return build_request(row, model=self.model, tag=self.tag, max_tokens=self.max_tokens,
                             accept_truncated=self.accept_truncated)

    def parse(self, row: CorpusTask, result: LLMResult) -> str | Reject:
        text = (result.text or "").strip()
        return text if text else Reject(self.key(row), "the model returned no text")


@dataclass(frozen=True)
class FileOutcome:
    task: CorpusTask
    status: str  # "generated" | "failed" | "skipped"
    reason: str | None = None
    words: int = 0
    cached: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    truncated: bool = False
    model: str | None = None


@dataclass
class GenerationReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    usage: dict = field(default_factory=dict)  # the task run's usage (requests, cache hits, provider calls, ...)

    def with_status(self, status: str) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def generated(self) -> list[FileOutcome]:
        return self.with_status("generated")

    @property
    def failed(self) -> list[FileOutcome]:
        return self.with_status("failed")

    def totals(self) -> dict:
        costs = [o.cost_usd for o in self.outcomes if not o.cached]
        return {
            "requests": len(self.outcomes),
            "cache_hits": sum(o.cached for o in self.outcomes),
            "provider_calls": self.usage.get("provider_calls", 0),
            "input_tokens": sum(o.input_tokens for o in self.outcomes),
            "output_tokens": sum(o.output_tokens for o in self.outcomes),
            "cost_usd": round(sum(c for c in costs if c), 6),
            "cost_unknown_for": sum(c is None for c in costs),
            # answers that were not results, by reason (TaskUsage: failed, failed_length, failed_refusal...)
            **{k: v for k, v in self.usage.items() if k == "failed" or k.startswith("failed_")},
        }


def _usage(result: LLMResult) -> dict:
    return dict(cached=result.cached, input_tokens=result.usage.input_tokens,
                output_tokens=result.usage.output_tokens,
                cost_usd=0.0 if result.cached else result.usage.cost_usd, model=result.model)


def generate_missing(
    tasks: Sequence[CorpusTask],
    client,
    *,
    model: str | None = None,
    tag: str = "corpus",
    label: str = "corpus",
    max_tokens: int = MAX_TOKENS,
    accept_truncated: bool = False,
    on_written: Callable[[FileOutcome], None] | None = None,
) -> GenerationReport:
    """Ask for every task's text and write each answer to its ``.corpus`` file as it arrives (with no tasks
    the client is not needed and may be None).

    An answer cut off at ``max_tokens`` is not a document: the client asks again with a larger budget, and
    if it is still cut off the file is a failure with that reason (and is asked for again by the next run).
    ``accept_truncated=True`` writes such answers anyway, each one flagged ``truncated`` in its outcome.
    ``on_written(outcome)`` is called the moment each file is in place (on the LLM client's thread; keep it
    short): the asset registers the file in the catalogue then, not when the run ends."""
    report = GenerationReport()
    tasks = list(tasks)
    if not tasks:
        return report
    if client is None:
        raise ValueError(f"{len(tasks)} documents to generate but no LLM client given")
    writing = CorpusWriting(model=model, tag=tag, max_tokens=max_tokens, accept_truncated=accept_truncated)
    by_key = {writing.key(t): t for t in tasks}
    outcomes: dict[str, FileOutcome] = {}

    def write(row: CorpusTask, text: str, result: LLMResult) -> None:
        key = writing.key(row)
        if row.path.exists():  # written by a concurrent run since we planned: keep theirs
            outcomes[key] = FileOutcome(row, "skipped", reason="appeared during the run", **_usage(result))
            return
        atomic_write_text(row.path, text + "\n", durable=False)  # flushed together at the end (os.sync)
        outcomes[key] = FileOutcome(row, "generated", words=word_count(text),
                                    truncated=result.finish_reason == "length", **_usage(result))
        if on_written is not None:
            on_written(outcomes[key])

    try:
        run = run_task(writing, tasks, client, label=label, on_record=write)
    finally:
        # One flush for the run's files instead of an fsync each (0.7 s of a 4 s run of 512 files, measured).
        # A kill never leaves a partial file (rename); power loss before this line can leave empty ones,
        # which the next run's plan treats as missing.
        os.sync()
    for item in [*run.rejects, *run.failures]:
        outcomes[item.key] = FileOutcome(by_key[item.key], "failed", reason=item.reason,
                                         **_usage(run.results[item.key]))
    report.outcomes = [outcomes[writing.key(t)] for t in tasks]
    report.usage = run.usage.as_dict()
    return report
