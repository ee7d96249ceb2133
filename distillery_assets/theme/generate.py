"""Persona ChatML generation from keyword-filtered chunks, as one LLM task.

:class:`ExchangeTask` is the task: one row per (chunk, example index); the response format is the
``{user, assistant}`` exchange (the client checks the schema and re-asks on its own); ``parse`` runs the
content validators. :class:`ChatMLGenerator` selects the chunks, builds the rows, runs the task through
the LLM task runner with a journal (one line per finished example), then drops repeated questions in
input order and tallies the report.

Determinism (what makes kill-and-resume give the same examples as an uninterrupted run): persona, query
theme and request seed depend only on ``(seed, chunk_id, example index)``; answers are parsed in row order;
the duplicate-question pass runs over the selected rows' kept examples in order, journalled or new alike.
A call that produced no usable answer (provider error, cut off at max_tokens, invalid JSON after the
client's re-asks) is a failure: not journalled, asked again by the next run.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from distillery_assets.io.hashing import derived_seed, json_fingerprint
from distillery_assets.llm import ChatMessage, LLMRequest, LLMResult
from distillery_assets.llm.task import LLMTask, Reject, TaskClient, TaskJournal, TaskRun, run_task
from distillery_assets.theme.config import Persona
from distillery_assets.theme.validate import ExampleValidator, QuestionIndex


class Exchange(BaseModel):
    """The generator's reply: one question and the character's answer (other keys a small model adds
    are ignored, as the seed's parser did)."""

    user: str = Field(min_length=5)
    assistant: str = Field(min_length=5)


GENERATOR_INSTRUCTIONS = """\
You write one training example for a language model that will play the character below.

CHARACTER
{persona}

TASK
Invent a question that a thoughtful settler might put to the character, then write the character's \
answer. The answer draws on ideas, images or events from the source passage, stays in character and runs \
two to four sentences (about 200 to 450 characters). The character knows nothing after July 1969, so use \
period words: "calculating machine" rather than "computer", "thinking machine" rather than "AI", \
"method of calculation" rather than "algorithm", "communications grid" rather than "network". Write plain \
prose: no lists, headings, bold text or speaker labels.

Reply with a single JSON object and nothing else: {{"user": "<the question>", "assistant": "<the answer>"}}"""

PASSAGE_MESSAGE = "SOURCE PASSAGE (from {title}):\n{passage}\n\nTOPIC OF THE QUESTION: {theme}"



@dataclass(frozen=True)
class GenerationSettings:
    examples_per_chunk: int = 2
    temperature: float = 0.8
    max_tokens: int = 400
    max_passage_chars: int = 1500
    min_chunk_chars: int = 100
    seed: int = 42
    model: str | None = None

    def fingerprint(self, *extra: str) -> str:
        """Identifies a generation setup; the journal lives under it so a changed setup starts afresh."""
        return json_fingerprint({**asdict(self), "extra": list(extra)}, length=12)


@dataclass
class GenerationReport:
    chunks_selected: int = 0
    chunks_processed: int = 0
    chunks_resumed: int = 0
    chunks_too_short: int = 0
    chunks_failed: int = 0
    examples_kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    persona_counts: Counter = field(default_factory=Counter)
    response_chars: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    torn_line_dropped: bool = False

    def as_dict(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "chunks_selected": self.chunks_selected,
            "chunks_processed": self.chunks_processed,
            "chunks_resumed_from_checkpoint": self.chunks_resumed,
            "chunks_skipped_too_short": self.chunks_too_short,
            "chunks_failed": self.chunks_failed,
            "examples_kept": self.examples_kept,
            "examples_rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected.most_common()),
            "persona_distribution": dict(sorted(self.persona_counts.items())),
            "mean_response_chars": round(self.response_chars / self.examples_kept, 1) if self.examples_kept else 0,
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0),
            "llm_calls": usage.get("requests", 0),
            "llm_cached_calls": usage.get("cache_hits", 0),
            "llm_provider_calls": usage.get("provider_calls", 0),
            "estimated_cost_usd": usage.get("cost_usd", 0.0),
            "failures": self.failures[:20],
            "torn_checkpoint_line_dropped": self.torn_line_dropped,
        }


@dataclass(frozen=True)
class Job:
    """One example to generate: a chunk, its example index, and the persona and topic drawn for it."""

    chunk: dict[str, Any] = field(compare=False)
    index: int
    persona: Persona
    theme: str

    @property
    def key(self) -> str:
        return f"{self.chunk['chunk_id']}#{self.index}"


class ExchangeTask(LLMTask[Job]):
    """The generator prompt for one (chunk, example) in; a validated ChatML example out."""

    response_format = Exchange

    def __init__(self, settings: GenerationSettings, validator: ExampleValidator, tag: str = "theme_chatml"):
        self.settings, self.validator, self.name = settings, validator, tag

    def key(self, row: Job) -> str:
        return row.key

    def prompt(self, row: Job) -> LLMRequest:
        s = self.settings
        return LLMRequest(
            messages=[
                ChatMessage(role="system", content=GENERATOR_INSTRUCTIONS.format(persona=row.persona.prompt)),
                ChatMessage(role="user", content=PASSAGE_MESSAGE.format(
                    title=row.chunk.get("source_title") or "an old book",
                    passage=row.chunk["text"][: s.max_passage_chars], theme=row.theme)),
            ],
            temperature=s.temperature, max_tokens=s.max_tokens, seed=derived_seed(s.seed, row.chunk["chunk_id"], row.index, 0),
            model=s.model, tag=self.name)

    def parse(self, row: Job, result: LLMResult) -> dict | Reject:
        exchange = self.response(result)
        verdict = self.validator.check_content(exchange.user, exchange.assistant)
        if verdict:
            return Reject(row.key, verdict[0], verdict[1])
        chunk = row.chunk
        return {
            "messages": [
                {"role": "system", "content": row.persona.prompt},
                {"role": "user", "content": exchange.user.strip()},
                {"role": "assistant", "content": exchange.assistant.strip()},
            ],
            "metadata": {
                "source_id": chunk.get("source_id"),
                "source_title": chunk.get("source_title", ""),
                "chunk_id": chunk["chunk_id"],
                "persona": row.persona.name,
                "persona_group": row.persona.group,
                "query_theme": row.theme,
                "example_index": row.index,
            },
        }


class ChatMLGenerator:
    def __init__(
        self,
        personas: Sequence[Persona],
        query_themes: Sequence[str],
        validator: ExampleValidator,
        settings: GenerationSettings,
        journal_path: Path,
        tag: str = "theme_chatml",
    ):
        if not personas or not query_themes:
            raise ValueError("need at least one persona and one query theme")
        self.personas = list(personas)
        self.query_themes = list(query_themes)
        self.validator = validator
        self.settings = settings
        self.journal = TaskJournal(journal_path)
        self.task = ExchangeTask(settings, validator, tag)
        self._kept: dict[str, list[dict[str, Any]]] = {}
        self._rejects: list[dict[str, Any]] = []

    def plan(self, chunk: dict[str, Any]) -> list[Job]:
        rng = random.Random(derived_seed(self.settings.seed, chunk["chunk_id"]))
        return [Job(chunk, index, rng.choice(self.personas), rng.choice(self.query_themes))
                for index in range(self.settings.examples_per_chunk)]

    def prompt_messages(self, chunk: dict[str, Any]) -> list[dict[str, str]]:
        """The generator prompt of a chunk's first example, as plain messages (for the model benchmark)."""
        request = self.task.request(self.plan(chunk)[0])
        return [{"role": m.role, "content": m.content} for m in request.messages]

    def run(self, chunks: Iterable[dict[str, Any]], client: TaskClient, max_chunks: int | None = None,
            log: Callable[[str], None] = lambda _msg: None) -> tuple[list[str], GenerationReport]:
        """Generate for the first ``max_chunks`` chunks (in order) through ``client``; returns the selected
        chunk ids and the report. Examples are available from :meth:`examples` afterwards."""
        report = GenerationReport(torn_line_dropped=self.journal.dropped_torn_line)
        selected: list[dict[str, Any]] = []
        for chunk in chunks:
            if max_chunks is not None and len(selected) >= max_chunks:
                break
            selected.append(chunk)
        report.chunks_selected = len(selected)
        jobs: list[Job] = []
        for chunk in selected:
            if len(chunk["text"].strip()) < self.settings.min_chunk_chars:
                report.chunks_too_short += 1
            else:
                jobs.append(self.plan(chunk))
        rows = [job for chunk_jobs in jobs for job in chunk_jobs]
        run = run_task(self.task, rows, client, journal=self.journal, label=f"{self.task.name}", log=log)
        self._tally(selected, jobs, run, report)
        return [c["chunk_id"] for c in selected], report

    def _tally(self, selected: list[dict], jobs: list[list[Job]], run: TaskRun, report: GenerationReport) -> None:
        failed = {f.key: f.reason for f in run.failures}
        by_key = dict(zip(run.keys, run.records))
        for reject in run.rejects:
            report.rejected[reject.reason] += 1
        self._kept = {}
        self._rejects = [{"chunk_id": r.key.rsplit("#", 1)[0], "index": int(r.key.rsplit("#", 1)[1]),
                          "reason": r.reason, "detail": r.detail} for r in run.rejects]
        # the repeat memory holds only this selection's kept questions, in order, as an uninterrupted run has it
        questions = QuestionIndex(self.validator.settings.near_duplicate_jaccard)
        for chunk_jobs in jobs:
            chunk_id = chunk_jobs[0].chunk["chunk_id"]
            asked = [j for j in chunk_jobs if j.key in run.results]
            if any(j.key in failed for j in chunk_jobs):
                report.chunks_failed += 1
                report.failures += [f"{chunk_id}: {failed[j.key]}" for j in chunk_jobs if j.key in failed]
            elif asked:
                report.chunks_processed += 1
            else:
                report.chunks_resumed += 1
            kept = []
            for job in chunk_jobs:  # the duplicate-question pass, in row order
                example = by_key.get(job.key)
                if example is None:
                    continue
                question = example["messages"][1]["content"]
                dup = questions.match(question)
                if dup:
                    report.rejected[dup] += 1
                    self._rejects.append({"chunk_id": chunk_id, "index": job.index, "reason": dup,
                                          "detail": question[:80], "persona": job.persona.name})
                    continue
                questions.add(example["messages"][1]["content"])
                kept.append(example)
                report.examples_kept += 1
                report.persona_counts[example["metadata"]["persona"]] += 1
                report.response_chars += len(example["messages"][2]["content"])
            self._kept[chunk_id] = kept
        report.usage = run.usage.as_dict()

    def examples(self, selected: Iterable[str]) -> list[dict[str, Any]]:
        """Kept examples of the selected chunks, in chunk order then example order."""
        return [example for chunk_id in selected for example in self._kept.get(chunk_id, [])]

    def rejects(self) -> list[dict[str, Any]]:
        """Every reject of the last run's rows (journalled ones included), with chunk id and example index."""
        return list(self._rejects)
