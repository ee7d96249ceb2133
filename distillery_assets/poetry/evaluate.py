"""The poet and the educator judged as their users judge them, on held-out prompts (seed 001's
``generation_quality`` and ``quant_preservation``, which the seed left as stubs).

Three models per role answer the same held-out prompts (``data/inputs/poetry/heldout/``: briefs for the poet,
student poems for the educator), one model loaded at a time, each with the tutor's sampling for that step
(``inference.yaml``) and llama.cpp seed 0 for every reply:

* ``base``: the untouched base checkpoint, written as an f16 GGUF;
* ``finetune``: the LoRA merged into that base (the export's merge), written as an f16 GGUF;
* ``gguf``: the exported, quantized GGUF (what the tutor loads).

All three go through the same llama.cpp sampler, so a difference between them is the weights', not a
different decoder's. Each reply is measured:

* poet: verse by the project's rule (:mod:`distillery_assets.poetry.verse`), non-empty lines, distinct-line
  ratio, echo of the brief (share of the draft's word trigrams found in the brief), a banned phrase, cut at
  ``max_tokens``;
* educator: the quality gate's failures (voice break, anti-rubric, LLM-isms, specificity, too short; the
  seed's four checks and the project's length floor), reply length in words, whether it names a line
  ("line 3", "the last line") and whether it quotes the poem (a quoted span found in the poem).

Comparisons are paired by prompt with a percentile bootstrap over prompts (:func:`paired_bootstrap`): the
fine-tune against the base (is the training worth it?) and the GGUF against the fine-tune (quantization
preservation). A pairwise judgement (fine-tune vs base, order decided per prompt by a seeded coin) goes
through the LLM resource's client with :func:`distillery_assets.llm.task.run_task` (cached, journalled).

Nothing here imports Dagster; ``assets/poetry.py`` wires :func:`evaluate_role` into ``poet_eval`` and
``educator_eval``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distillery_assets.io import atomic_path, atomic_write_jsonl, atomic_write_text, read_jsonl
from distillery_assets.io.hashing import derived_seed, json_fingerprint, sha256_file_cached
from distillery_assets.llm import ChatMessage, LLMRequest, LLMResult
from distillery_assets.llm.task import LLMTask, Reject, TaskRun, run_task
from distillery_assets.markdown import INLINE_MD_LIMIT, fit_md_table, md_table, one_line
from distillery_assets.paths import inputs_dir
from distillery_assets.plots import Chart, Series
from distillery_assets.poetry.quality_gate import Gate
from distillery_assets.poetry.raw_poems import load_poems, read_requests
from distillery_assets.poetry.settings import PoetryConfig, PoetryConfigError, Sampling
from distillery_assets.poetry.verse import verse_verdict

ROLES = ("poet", "educator")
VARIANTS = ("base", "finetune", "gguf")
VARIANT_NAMES = {"base": "base", "finetune": "fine-tune (merged)", "gguf": "GGUF"}
OBJECTIVE = {"poet": ("verse", +1), "educator": ("gate_failures", -1)}
"""Each role's training objective as a measure and the direction that is better (+1 higher, -1 lower)."""

MEASURES = {
    "poet": ("verse", "lines", "distinct_line_ratio", "brief_echo", "banned_phrase", "cut_at_max_tokens"),
    "educator": ("gate_failures", "gate_pass", "reply_words", "names_line", "quotes_poem", "cites_poem",
                 "cut_at_max_tokens"),
}
MEASURE_NOTES = {
    "verse": "share of drafts that are verse (poetry/verse.py)",
    "lines": "non-empty lines per draft",
    "distinct_line_ratio": "distinct lines / lines",
    "brief_echo": "share of the draft's word trigrams copied from the brief",
    "banned_phrase": "share of drafts with a banned phrase (banned_phrases.txt)",
    "cut_at_max_tokens": "share of replies cut at max_tokens",
    "gate_failures": "quality-gate failures per reply",
    "gate_pass": "share of replies passing the gate",
    "reply_words": "words per reply",
    "names_line": "share naming a line or stanza",
    "quotes_poem": "share quoting the poem (a quoted span found in it)",
    "cites_poem": "share naming a line or quoting the poem",
}
GATE_TAGS = ("voice_break", "anti_rubric", "llm_ism", "specificity", "too_short", "empty")


# ---- settings and held-out prompts -------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoleEvalSettings(_Strict):
    prompt: str
    sampling: str


class BootstrapSettings(_Strict):
    resamples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0


class JudgeSettings(_Strict):
    poet_rubric: str
    educator_rubric: str
    max_tokens: int = Field(8, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int = 0


class EvalSettings(_Strict):
    min_prompts: int = Field(30, ge=1)
    poet: RoleEvalSettings
    educator: RoleEvalSettings
    bootstrap: BootstrapSettings = BootstrapSettings()
    judge: JudgeSettings

    def role(self, role: str) -> RoleEvalSettings:
        return getattr(self, role)


def load_eval_settings(cfg: PoetryConfig) -> EvalSettings:
    return cfg.read("eval.yaml", EvalSettings)


def heldout_dir() -> Path:
    return inputs_dir() / "poetry" / "heldout"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str  # the brief (poet) or the student's poem (educator)
    source: str


def heldout_briefs(root: Path | None = None) -> list[Prompt]:
    """``heldout/briefs.txt``: one brief per line (``#`` comments and blank lines skipped)."""
    path = (root or heldout_dir()) / "briefs.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the held-out briefs are missing")
    return [Prompt(f"brief_{i:02d}", text, f"briefs.txt brief {i}") for i, text in enumerate(read_requests(path), 1)]


def heldout_poems(root: Path | None = None) -> list[Prompt]:
    """``heldout/student_poems/`` (``.txt`` / ``.jsonl``, as the raw poem reader takes them); an unreadable file
    or line is an error naming it (a held-out set with a silent gap is not the set the figures claim)."""
    poems, rejects = load_poems(root or heldout_dir(), "student_poems")
    if rejects:
        raise ValueError("held-out student poems: " + "; ".join(f"{r.source}: {r.reason}" for r in rejects[:5]))
    return [Prompt(p.source, p.text, p.source) for p in poems]


def heldout_prompts(role: str, root: Path | None = None) -> list[Prompt]:
    if role == "poet":
        return heldout_briefs(root)
    if role == "educator":
        return heldout_poems(root)
    raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")


def heldout_files(root: Path | None = None) -> list[Path]:
    """The held-out files (for lineage: the evals read them)."""
    root = root or heldout_dir()
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def training_overlap(prompts: Sequence[Prompt], training_files: Sequence[Path]) -> list[str]:
    """Held-out prompts whose text (words only, case-folded) appears inside any message of the training files:
    a held-out set that leaked into training judges nothing. Returns ``"<prompt id> in <file>:<line>"``."""
    wanted = {p.id: _norm(p.text) for p in prompts if _norm(p.text)}
    found = []
    for path in training_files:
        for number, record in enumerate(read_jsonl(path), 1):
            body = _norm(" ".join(m.get("content", "") for m in record.get("messages", []) if isinstance(m, dict)))
            found += [f"{pid} in {Path(path).name}:{number}" for pid, text in wanted.items() if text in body]
    return found


# ---- measures -------------------------------------------------------------------------------------------

def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _trigrams(text: str) -> list[tuple[str, ...]]:
    words = re.findall(r"\w+", (text or "").lower())
    return [tuple(words[i:i + 3]) for i in range(len(words) - 2)]


def brief_echo(draft: str, brief: str) -> float:
    """Share of the draft's word trigrams that also occur in the brief (0 for a draft under three words)."""
    grams = _trigrams(draft)
    if not grams:
        return 0.0
    source = set(_trigrams(brief))
    return sum(g in source for g in grams) / len(grams)


def poet_measures(draft: str, brief: str, banned: Sequence[str], finish_reason: str | None) -> dict[str, float]:
    lines = _lines(draft)
    low = (draft or "").lower()
    return {
        "verse": float(verse_verdict(draft).verse),
        "lines": float(len(lines)),
        "distinct_line_ratio": len({line.lower() for line in lines}) / len(lines) if lines else 0.0,
        "brief_echo": brief_echo(draft, brief),
        "banned_phrase": float(any(p in low for p in banned)),
        "cut_at_max_tokens": float(finish_reason == "length"),
    }


NAMES_LINE = re.compile(r"\b(?:line|stanza)s?\s+\d+\b|\b(?:first|second|third|fourth|last|final|opening|closing)"
                        r"\s+(?:line|stanza)\b", re.I)
QUOTED = re.compile(r"\"([^\"\n]{4,})\"|“([^”\n]{4,})”|‘([^’\n]{4,})’|(?<!\w)'([^'\n]{4,})'(?!\w)")


def quotes_poem(reply: str, poem: str) -> bool:
    """A quoted span of the reply (two words or more, in straight or curly quotes) occurs in the poem."""
    body = _norm(poem)
    for match in QUOTED.finditer(reply or ""):
        span = _norm(next(g for g in match.groups() if g))
        if len(span.split()) >= 2 and span in body:
            return True
    return False


def educator_measures(reply: str, poem: str, gate: Gate, finish_reason: str | None) -> dict[str, float]:
    reasons = gate.check("critique", {"critique": reply})
    tags = [r.split(":", 1)[0] for r in reasons]
    names, quotes = bool(NAMES_LINE.search(reply or "")), quotes_poem(reply, poem)
    return {
        "gate_failures": float(len(reasons)),
        "gate_pass": float(not reasons),
        "reply_words": float(len((reply or "").split())),
        "names_line": float(names),
        "quotes_poem": float(quotes),
        "cites_poem": float(names or quotes),
        "cut_at_max_tokens": float(finish_reason == "length"),
        **{f"gate_{tag}": float(tag in tags) for tag in GATE_TAGS},
    }


# ---- statistics -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Diff:
    """``a - b`` over paired prompts with its percentile bootstrap interval."""

    measure: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def words(self, a: str, b: str) -> str:
        if not self.excludes_zero:
            return f"no difference beyond noise ({a} - {b} = {self.diff:+.3f}, CI [{self.lo:+.3f}, {self.hi:+.3f}])"
        side = "higher" if self.diff > 0 else "lower"
        return f"{a} {side} than {b} by {abs(self.diff):.3f} (CI [{self.lo:+.3f}, {self.hi:+.3f}], n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        return {"measure": self.measure, "n": self.n, "mean_a": self.mean_a, "mean_b": self.mean_b,
                "diff": self.diff, "ci_low": self.lo, "ci_high": self.hi, "confidence": self.confidence}


def paired_bootstrap(measure: str, a: Sequence[float], b: Sequence[float], *, resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Diff:
    """Mean of ``a - b`` (paired by position) and a percentile bootstrap interval, resampling the pairs."""
    import numpy as np

    if len(a) != len(b) or not len(a):
        raise ValueError(f"{measure}: paired bootstrap needs two equal, non-empty lists ({len(a)} vs {len(b)})")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Diff(measure, len(d), float(np.mean(a)), float(np.mean(b)), float(d.mean()), float(lo), float(hi),
                confidence)


# ---- the models -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelFile:
    variant: str
    path: Path
    note: str


def _save_checkpoint(base: str, adapter_dir: Path | None, tokenizer_dir: Path, out: Path) -> None:
    """The base (with the adapter merged when given) as a float32 HF folder with the export's end-of-turn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery_assets.training.export import merge_adapter

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = merge_adapter(base, adapter_dir, "float32") if adapter_dir else \
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    eot_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    model.config.eos_token_id = eot_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = eot_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def f16_gguf(base: str, adapter_dir: Path | None, out_file: Path) -> tuple[Path, bool]:
    """``out_file``: the base, or the base with ``adapter_dir`` merged as the export merges it, converted to an
    f16 GGUF. Reused while its fingerprint (base identity, adapter bytes) is unchanged; (path, reused)."""
    from distillery_assets.training.base_model import base_identity
    from distillery_assets.training.gguf_tools import convert_to_gguf

    files = sorted(p for p in Path(adapter_dir).rglob("*") if p.is_file()) if adapter_dir else []
    fingerprint = json_fingerprint({"base": base_identity(base), "adapter": [
        (p.name, sha256_file_cached(p)) for p in files if p.suffix in (".safetensors", ".json")]})
    stamp = out_file.with_suffix(".fingerprint")
    if out_file.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return out_file, True
    out_file.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-eval-", dir=out_file.parent))
    try:
        _save_checkpoint(base, adapter_dir, Path(adapter_dir) if adapter_dir else Path(base), work / "hf")
        with atomic_path(out_file) as tmp:
            convert_to_gguf(work / "hf", tmp, outtype="f16")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_text(stamp, fingerprint + "\n")
    return out_file, False


def prepare_models(base: str, adapter_dir: Path, gguf: Path, folder: Path) -> tuple[dict[str, ModelFile], dict[str, bool]]:
    """The three models of one role: ``folder/base-f16.gguf``, ``folder/finetune-f16.gguf`` (made or reused) and
    the exported ``gguf``. Returns them and which of the two f16 files were reused."""
    base_file, base_reused = f16_gguf(base, None, Path(folder) / "base-f16.gguf")
    tuned_file, tuned_reused = f16_gguf(base, Path(adapter_dir), Path(folder) / "finetune-f16.gguf")
    models = {
        "base": ModelFile("base", base_file, f"the base checkpoint ({Path(base).name}) as an f16 GGUF"),
        "finetune": ModelFile("finetune", tuned_file, f"the LoRA ({Path(adapter_dir).name}) merged into the base in "
                                                      f"float32 (the export's merge), as an f16 GGUF"),
        "gguf": ModelFile("gguf", Path(gguf), f"the exported {Path(gguf).name}"),
    }
    return models, {"base": base_reused, "finetune": tuned_reused}


# ---- generation -----------------------------------------------------------------------------------------

@dataclass
class Generation:
    prompt_id: str
    text: str
    finish_reason: str | None
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "text": self.text, "finish_reason": self.finish_reason, "key": self.key}


ChatFactory = Callable[[Path, str], Any]
"""``(gguf path, system prompt)`` -> a chat callable ``(messages, sampling) -> Reply`` with a ``close()``."""


def default_chat_factory(settings) -> ChatFactory:
    """``GGUFChat`` with the role's model settings, its system prompt evaluated once at load."""
    from distillery_assets.poetry.gguf_chat import GGUFChat

    return lambda path, system: GGUFChat(path, settings, system=system, contexts=1)  # one turn at a time


def generate(model: ModelFile, prompts: Sequence[Prompt], *, system: str, template: str, sampling: Sampling,
             cache_file: Path, chat_factory: ChatFactory, log: Callable[[str], None] = print) -> tuple[list[Generation], int]:
    """Every prompt's reply from ``model`` (loaded once), reusing the replies ``cache_file`` holds for the same
    model bytes, messages and sampling; the file is rewritten atomically. Returns (replies in prompt order,
    how many were reused)."""
    from distillery_assets.poetry.session import Reply
    from distillery_assets.poetry.text import render

    model_sha = sha256_file_cached(model.path)
    cached = {r["key"]: r for r in read_jsonl(cache_file)} if cache_file.is_file() else {}
    todo, out = [], {}
    for p in prompts:
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": render(template, name="eval prompt", brief=p.text, poem=p.text)}]
        key = json_fingerprint({"model": model_sha, "messages": messages, "sampling": sampling.model_dump(), "seed": 0})
        if key in cached:
            out[p.id] = Generation(p.id, cached[key]["text"], cached[key]["finish_reason"], key)
        else:
            todo.append((p, messages, key))
    if todo:
        chat = chat_factory(model.path, system)
        try:
            for i, (p, messages, key) in enumerate(todo, 1):
                raw = chat(messages, sampling)
                reply = raw if isinstance(raw, Reply) else Reply(str(raw))
                out[p.id] = Generation(p.id, (reply.text or "").strip(), reply.finish_reason, key)
                if i % 10 == 0 or i == len(todo):
                    log(f"{model.variant}: {i}/{len(todo)} replies")
        finally:
            chat.close()
    ordered = [out[p.id] for p in prompts]
    atomic_write_jsonl(cache_file, [g.to_dict() for g in ordered])
    return ordered, len(prompts) - len(todo)


# ---- the pairwise judgement -----------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgeRow:
    prompt: Prompt
    first: str  # variant shown as 1
    second: str
    texts: tuple[tuple[str, str], ...]  # (variant, text)

    def text(self, variant: str) -> str:
        return dict(self.texts)[variant]


class PairJudge(LLMTask[JudgeRow]):
    """Which of two replies to one prompt is better, by the rubric; the answer's first 1 or 2 is the verdict."""

    def __init__(self, role: str, rubric: str, settings: JudgeSettings):
        self.name = f"poetry_eval/judge_{role}"
        self.role, self.rubric, self.settings = role, rubric, settings
        self.noun = "Poem" if role == "poet" else "Response"

    def key(self, row: JudgeRow) -> str:
        return row.prompt.id

    def prompt(self, row: JudgeRow) -> LLMRequest:
        asked = "The brief" if self.role == "poet" else "The student's poem"
        user = (f"{asked}:\n---\n{row.prompt.text}\n---\n\n{self.noun} 1:\n---\n{row.text(row.first) or '(empty)'}\n---"
                f"\n\n{self.noun} 2:\n---\n{row.text(row.second) or '(empty)'}\n---\n\nWhich is better, 1 or 2?")
        return LLMRequest(messages=[ChatMessage(role="system", content=self.rubric), ChatMessage(role="user", content=user)],
                          temperature=self.settings.temperature, max_tokens=self.settings.max_tokens,
                          seed=self.settings.seed, accept_truncated=True, tag=self.name)

    def parse(self, row: JudgeRow, result: LLMResult) -> dict | Reject:
        match = re.search(r"[12]", result.text or "")
        if not match:
            return Reject(row.prompt.id, "no_verdict", one_line(result.text, 120))
        position = int(match.group(0))
        return {"prompt_id": row.prompt.id, "first": row.first, "picked_position": position,
                "winner": row.first if position == 1 else row.second, "answer": one_line(result.text, 120)}


def judge_rows(prompts: Sequence[Prompt], a: dict[str, str], b: dict[str, str], *, seed: int,
               names: tuple[str, str] = ("finetune", "base")) -> list[JudgeRow]:
    """One row per prompt. Which reply is shown first is drawn at random (seeded) and balanced: ``names[0]`` goes
    first on exactly half the prompts (the extra one of an odd count goes to ``names[1]``), so a judge that always
    picks one position gives each model the same share of wins."""
    order = sorted(p.id for p in prompts)
    random.Random(derived_seed("poetry-judge", seed)).shuffle(order)
    second_first = set(order[:len(order) - len(order) // 2])
    rows = []
    for p in prompts:
        first, second = (names[1], names[0]) if p.id in second_first else names
        rows.append(JudgeRow(p, first, second, ((names[0], a[p.id]), (names[1], b[p.id]))))
    return rows


@dataclass
class JudgeSummary:
    judge: str
    asked: int
    verdicts: int
    finetune_wins: int
    base_wins: int
    no_verdict: int
    failures: int
    first_position_picks: int
    finetune_shown_first: int  # among the verdicts: under pure position bias the fine-tune's wins follow this
    finetune_win_rate: Diff | None  # win indicator against 0.5
    weakness: str
    records: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("finetune_win_rate", "records")}
        d["finetune_win_rate"] = self.finetune_win_rate.to_dict() if self.finetune_win_rate else None
        return d


OFFLINE_JUDGE_WEAKNESS = (
    "The judge is the offline SmolLM2-135M: it cannot read a poem, it mostly answers the same position whatever "
    "is shown there (see first_position_picks), and with the order randomised its verdict is close to a coin. "
    "Read this as a check that the plumbing works; a capable provider (DISTILLERY_LLM_PROVIDER) gives a "
    "judgement worth reading.")


def judge_name(client) -> str:
    provider = client.provider
    try:
        model = provider.model_id(None)
    except Exception:  # noqa: BLE001 - the name is for display only
        model = "default model"
    return f"{provider.name}: {model}"


def run_judge(role: str, prompts: Sequence[Prompt], finetune: dict[str, str], base: dict[str, str], client, *,
              rubric: str, settings: JudgeSettings, bootstrap: BootstrapSettings, journal: Path,
              log: Callable[[str], None] | None = None) -> tuple[JudgeSummary, TaskRun]:
    rows = judge_rows(prompts, finetune, base, seed=settings.seed)
    run = run_task(PairJudge(role, rubric, settings), rows, client, journal=journal, label=f"poetry_eval/judge_{role}",
                   log=log)
    records = run.records
    name = judge_name(client)
    offline = client.provider.name == "local" or "smollm2" in name.lower()
    wins = [float(r["winner"] == "finetune") for r in records]
    rate = paired_bootstrap("finetune_win_rate", wins, [0.5] * len(wins), resamples=bootstrap.resamples,
                            confidence=bootstrap.confidence, seed=bootstrap.seed) if wins else None
    first = sum(r["picked_position"] == 1 for r in records)
    shown_first = sum(r["first"] == "finetune" for r in records)
    weakness = OFFLINE_JUDGE_WEAKNESS if offline else (
        "An LLM judge: position bias is controlled by the randomised, balanced order; its taste is the rubric's "
        "and the model's.")
    if records and max(first, len(records) - first) >= 0.9 * len(records):
        side = "first" if first >= len(records) - first else "second"
        weakness += (f" Here it picked the reply shown {side} in {max(first, len(records) - first)} of {len(records)} "
                     f"verdicts: its win counts follow the order the coin chose, not the replies.")
    return JudgeSummary(name, len(rows), len(records), int(sum(wins)), len(records) - int(sum(wins)),
                        sum(r.reason == "no_verdict" for r in run.rejects), len(run.failures), first, shown_first,
                        rate, weakness, records), run


# ---- one role, end to end -------------------------------------------------------------------------------

@dataclass
class RoleEval:
    role: str
    prompts: list[Prompt]
    models: dict[str, ModelFile]
    generations: dict[str, list[Generation]]
    measures: dict[str, list[dict[str, float]]]  # variant -> per prompt
    means: dict[str, dict[str, float]]
    vs_base: dict[str, Diff]  # measure -> finetune - base
    gguf_vs_base: dict[str, Diff]
    quant: dict[str, Diff]  # measure -> gguf - finetune
    judge: JudgeSummary | None
    reused_replies: dict[str, int]
    settings: dict[str, Any]

    @property
    def objective(self) -> tuple[str, int]:
        return OBJECTIVE[self.role]

    def worse_than_base(self, variant: str = "finetune") -> bool:
        """The fine-tune (or GGUF) is worse than base on the role's objective beyond noise (CI excludes 0)."""
        measure, better = self.objective
        diff = (self.vs_base if variant == "finetune" else self.gguf_vs_base)[measure]
        return diff.excludes_zero and diff.diff * better < 0

    def quant_worse(self) -> bool:
        measure, better = self.objective
        diff = self.quant[measure]
        return diff.excludes_zero and diff.diff * better < 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role, "prompts": len(self.prompts),
            "models": {v: {"path": str(m.path), "note": m.note} for v, m in self.models.items()},
            "means": self.means,
            "finetune_vs_base": {k: d.to_dict() for k, d in self.vs_base.items()},
            "gguf_vs_base": {k: d.to_dict() for k, d in self.gguf_vs_base.items()},
            "gguf_vs_finetune": {k: d.to_dict() for k, d in self.quant.items()},
            "judge": self.judge.to_dict() if self.judge else None,
            "reused_replies": self.reused_replies, "settings": self.settings,
        }


def evaluate_role(role: str, models: dict[str, ModelFile], out_dir: Path, *, cfg: PoetryConfig | None = None,
                  client=None, chat_factory: ChatFactory | None = None, prompts: Sequence[Prompt] | None = None,
                  log: Callable[[str], None] = print) -> RoleEval:
    """Generate with each model in ``models`` (keys :data:`VARIANTS`), measure, compare, judge (when ``client``),
    and write ``out_dir``: ``<variant>.jsonl`` (replies), ``measures.jsonl`` (per prompt), ``report.json``,
    ``judge.jsonl`` (the judge's journal)."""
    cfg = cfg or PoetryConfig()
    ev = load_eval_settings(cfg)
    rs = ev.role(role)
    prompts = list(prompts if prompts is not None else heldout_prompts(role))
    if len(prompts) < ev.min_prompts:
        raise ValueError(f"{role} eval: {len(prompts)} held-out prompts, fewer than min_prompts {ev.min_prompts} "
                         f"(eval.yaml); add more under {heldout_dir()}")
    missing = [v for v in VARIANTS if v not in models]
    if missing:
        raise ValueError(f"{role} eval: no model for {missing}")
    steps = cfg.inference.sampling
    if rs.sampling not in type(steps).model_fields:
        raise PoetryConfigError(f"eval.yaml {role}.sampling: {rs.sampling!r} is not a step of inference.yaml "
                                f"({', '.join(type(steps).model_fields)})")
    sampling: Sampling = getattr(steps, rs.sampling)
    system = cfg.poet_system if role == "poet" else cfg.persona_condensed
    factory = chat_factory or default_chat_factory(cfg.inference.models.get(role))
    gate = Gate(cfg.pipeline.quality_gate, cfg.banned_phrases)

    generations, reused = {}, {}
    for variant in VARIANTS:
        generations[variant], reused[variant] = generate(
            models[variant], prompts, system=system, template=rs.prompt, sampling=sampling,
            cache_file=out_dir / f"{variant}.jsonl", chat_factory=factory, log=log)

    def measure(p: Prompt, g: Generation) -> dict[str, float]:
        if role == "poet":
            return poet_measures(g.text, p.text, cfg.banned_phrases, g.finish_reason)
        return educator_measures(g.text, p.text, gate, g.finish_reason)

    measures = {v: [measure(p, g) for p, g in zip(prompts, generations[v], strict=True)] for v in VARIANTS}
    keys = list(measures["base"][0])
    means = {v: {k: sum(m[k] for m in rows) / len(rows) for k in keys} for v, rows in measures.items()}
    bs = ev.bootstrap

    def compare(a: str, b: str) -> dict[str, Diff]:
        return {k: paired_bootstrap(k, [m[k] for m in measures[a]], [m[k] for m in measures[b]],
                                    resamples=bs.resamples, confidence=bs.confidence, seed=bs.seed) for k in keys}

    judge = None
    if client is not None:
        rubric_file = cfg.file(ev.judge.poet_rubric if role == "poet" else ev.judge.educator_rubric)
        try:
            rubric = rubric_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError as exc:
            raise PoetryConfigError(f"{rubric_file}: the judge's rubric is missing (eval.yaml judge)") from exc
        texts = {v: {g.prompt_id: g.text for g in generations[v]} for v in ("finetune", "base")}
        judge, _ = run_judge(role, prompts, texts["finetune"], texts["base"], client, rubric=rubric,
                             settings=ev.judge, bootstrap=bs, journal=out_dir / "judge.jsonl", log=log)

    rows = [{"prompt_id": p.id, "variant": v, **measures[v][i], "text": generations[v][i].text}
            for i, p in enumerate(prompts) for v in VARIANTS]
    atomic_write_jsonl(out_dir / "measures.jsonl", rows)
    result = RoleEval(role, prompts, models, generations, measures, means, compare("finetune", "base"),
                      compare("gguf", "base"), compare("gguf", "finetune"), judge, reused,
                      {"sampling_step": rs.sampling, "sampling": sampling.model_dump(), "prompt_template": rs.prompt,
                       "llama_cpp_seed": 0, "bootstrap": bs.model_dump()})
    atomic_write_text(out_dir / "report.json", json.dumps(result.to_dict(), indent=1, ensure_ascii=False))
    return result


# ---- presentation (markdown and chart; no Dagster) ------------------------------------------------------

def _fmt(v: float, measure: str) -> str:
    return f"{v:.1f}" if measure in ("lines", "reply_words") else f"{v:.3f}"


def _ci(d: Diff) -> str:
    mark = " *" if d.excludes_zero else ""
    return f"{d.diff:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]{mark}"


def table_markdown(ev: RoleEval, *, full: bool = True) -> str:
    """One row per measure: the three models' means, fine-tune - base and GGUF - fine-tune with their intervals
    (``*``: the interval excludes 0). ``full=False``: short headings, no notes, under the UI's in-place limit."""
    pct = round(100 * ev.vs_base[next(iter(ev.vs_base))].confidence)
    names = [VARIANT_NAMES[v] for v in VARIANTS] if full else ["base", "FT", "GGUF"]
    head = ["measure", *names, f"FT - base ({pct}% CI)", f"GGUF - FT ({pct}% CI)"]
    rows = [(f"{k} ({MEASURE_NOTES[k]})" if full and k in MEASURE_NOTES else k,
             *(_fmt(ev.means[v][k], k) for v in VARIANTS), _ci(ev.vs_base[k]), _ci(ev.quant[k]))
            for k in MEASURES[ev.role]]
    if full:
        return md_table(rows, head, align="lrrrrr")
    return fit_md_table(rows, head, align="lrrrrr", more=lambda n: f"… and {n} more in table_full")


def gate_table_markdown(ev: RoleEval) -> str:
    rows = [(tag, *(f"{ev.means[v][f'gate_{tag}']:.3f}" for v in VARIANTS)) for tag in GATE_TAGS]
    return md_table(rows, ["gate failure (share of replies)", *(VARIANT_NAMES[v] for v in VARIANTS)], align="lrrr")


def judge_markdown(j: JudgeSummary | None) -> str:
    if j is None:
        return "(no judge ran)"
    rate = j.finetune_win_rate
    rate_text = (f"{rate.mean_a:.3f} (vs 0.5: {rate.diff:+.3f}, CI [{rate.lo:+.3f}, {rate.hi:+.3f}])"
                 if rate else "n/a (no verdicts)")
    rows = [("pairs asked", j.asked), ("verdicts", j.verdicts),
            ("fine-tune preferred", j.finetune_wins), ("base preferred", j.base_wins),
            ("fine-tune win rate", rate_text), ("picked the reply shown first", f"{j.first_position_picks} of {j.verdicts}"),
            ("fine-tune was shown first", f"{j.finetune_shown_first} of {j.verdicts}"),
            ("no verdict in the answer", j.no_verdict), ("calls that failed", j.failures)]
    return md_table(rows, ["", "value"], align="ll")


CHART_MEASURES = {"poet": ("verse", "brief_echo", "banned_phrase"), "educator": ("gate_pass", "cites_poem", "cut_at_max_tokens")}


def chart(ev: RoleEval) -> Chart:
    """Horizontal bars: the share measures of each model (all in [0, 1])."""
    shares = CHART_MEASURES[ev.role]
    labels, values = [], []
    for k in shares:
        for v in VARIANTS:
            labels.append(f"{k.replace('_', ' ')}: {v}")
            values.append(round(ev.means[v][k], 3))
    return Chart(f"{ev.role} on {len(ev.prompts)} held-out prompts", "share of replies", "measure",
                 [Series("share", values, style="bar")], xticklabels=labels, horizontal=True)


def samples_markdown(ev: RoleEval, index: int = 0, most: int = INLINE_MD_LIMIT) -> str:
    """Prompt ``index`` with each model's reply, in text blocks clipped until the whole is under ``most``
    characters (the rest is in ``<variant>.jsonl``)."""
    from distillery_assets.markdown import text_block

    p = ev.prompts[index]
    md = ""
    for limit in (400, 300, 220, 160, 110, 70):
        parts = [f"**{p.id}**\n\n{text_block(p.text, limit)}"]
        parts += [f"_{VARIANT_NAMES[v]}_\n\n{text_block(ev.generations[v][index].text or '(empty)', limit)}"
                  for v in VARIANTS]
        md = "\n\n".join(parts)
        if len(md) < most:
            break
    return md


def summary_words(ev: RoleEval) -> str:
    measure, _ = ev.objective
    d, q = ev.vs_base[measure], ev.quant[measure]
    return (f"{ev.role}, {len(ev.prompts)} held-out prompts: {measure} base {d.mean_b:.3f}, fine-tune {d.mean_a:.3f}: "
            f"{d.words('fine-tune', 'base')}. GGUF vs fine-tune: {q.words('GGUF', 'fine-tune')}.")
