"""The poetry pipeline's editable configuration, read from ``config_dir()/poetry`` and validated.

Files (all plain text or YAML, meant to be edited by people):

* ``persona.md``, ``persona_condensed.txt`` -- the educator (full persona for generating teaching data, the
  condensed one as the trained model's system prompt);
* ``banned_phrases.txt`` -- LLM-isms the educator never uses;
* ``poet_system.txt`` -- the poet's system prompt;
* ``prompts.yaml`` -- task prompts T1..T6, poet pairs, cliché drafts, tutor-loop prompts, craft questions;
* ``pipeline.yaml`` -- volumes per task (profiles ``small``/``full``), dataset split, quality-gate rules;
* ``inference.yaml`` -- sampling per tutor step, approval phrases, model settings.

A missing file or a bad field raises :class:`PoetryConfigError` naming the file and the field.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distillery_assets.io.yamlfile import ConfigFileError, parse_yaml, validate_yaml
from distillery_assets.paths import config_dir

PROFILE_ENV = "DISTILLERY_POETRY_PROFILE"


class PoetryConfigError(ConfigFileError):
    """A poetry config file is missing or invalid; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _active_profile(profiles: dict[str, Any], default: str, file: str) -> Any:
    """The profile named by $DISTILLERY_POETRY_PROFILE, else the file's own ``profile`` field."""
    name = os.environ.get(PROFILE_ENV) or default
    if name not in profiles:
        raise PoetryConfigError(f"{file}: profile {name!r} not in profiles {sorted(profiles)}")
    return profiles[name]


class Volumes(_Strict):
    good_poems: int = Field(ge=0)
    bad_poems: int = Field(ge=0)
    critiques: int = Field(ge=0)
    briefs: int = Field(ge=0)
    comparisons: int = Field(ge=0)
    autopsies: int = Field(ge=0)
    dialogues: int = Field(ge=0)
    lessons: int = Field(ge=0)
    poet_pairs: int = Field(ge=0)
    # shipped public-domain poems (data/inputs/poetry/verse) made into brief -> poem pairs: the educator
    # writes the brief each poem answers, the poem is the target (0 = none; more than shipped = all)
    verse_pairs: int = Field(0, ge=0)
    verse_brief_max_tokens: int | None = Field(None, gt=0)  # those briefs' budget (default max_tokens)
    max_tokens: int = Field(gt=0)
    poem_max_tokens: int = Field(gt=0)
    temperature: float = Field(ge=0, le=2)
    educator_persona: Literal["full", "condensed"] = "full"  # system prompt when generating teaching data
    include_banned_list: bool = True  # append the "never say" list to that system prompt


class DatasetSettings(_Strict):
    seed: int = 42
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    max_samples: int = Field(0, ge=0)
    # token lengths are checked against each role's training max_seq (data/config/training/<role>.yaml)
    max_over_length_fraction: float = Field(0.2, ge=0, le=1)


class GateSettings(_Strict):
    voice_breaks: list[str]
    rubric_pattern: str
    specificity_tasks: list[str]
    specificity_pattern: str
    min_chars: int = Field(40, ge=0)
    # tasks whose poem must be verse by distillery_assets.poetry.verse (the dataset's gate; reason not_verse)
    verse_tasks: list[str] = Field(default_factory=list)


class PipelineSettings(_Strict):
    profile: str
    profiles: dict[str, Volumes]
    datasets: DatasetSettings
    quality_gate: GateSettings

    @property
    def volumes(self) -> Volumes:
        return _active_profile(self.profiles, self.profile, "pipeline.yaml")


class Sampling(_Strict):
    temperature: float = Field(ge=0, le=2)
    top_p: float = Field(gt=0, le=1)
    repeat_penalty: float = Field(gt=0)
    max_tokens: int = Field(gt=0)
    # end-of-turn is held back until the reply has this many non-empty lines (0: never held). A decoding
    # constraint like transformers' min_new_tokens, counted in lines: a 135M poet tends to stop after two.
    min_lines: int = Field(0, ge=0)


class StepSampling(_Strict):
    brief: Sampling
    critique: Sampling
    revision_brief: Sampling
    final_note: Sampling
    draft: Sampling
    revision: Sampling


class ModelSettings(_Strict):
    n_ctx: int = Field(2048, gt=0)
    # None: the thread policy's (distillery_assets.threads; DISTILLERY_THREADS overrides it everywhere)
    n_threads: int | None = Field(None, gt=0)
    n_threads_batch: int | None = Field(None, gt=0)
    n_gpu_layers: int = 0
    # llama.cpp contexts on the one file: a second lets the model read its own next turn ahead while it writes
    # this one (the educator's revision brief during its critique; poetry.gguf_chat.GGUFChat.read_ahead)
    contexts: int = Field(1, ge=1, le=4)


class InferenceSettings(_Strict):
    profile: str
    max_revisions: int = Field(3, ge=0)
    approval_phrases: list[str]
    sample_requests: list[str]
    models: dict[str, ModelSettings]
    profiles: dict[str, StepSampling]

    @property
    def sampling(self) -> StepSampling:
        return _active_profile(self.profiles, self.profile, "inference.yaml")


class Prompts(_Strict):
    never_say: str
    t1_critique: str
    t2_brief: str
    t3_comparison: str
    t4_autopsy: str
    t5_revision: str
    t5_follow_up: str
    t6_lesson: str
    poet_pair: str
    verse_brief: str
    bad_poem: str
    session_brief: str
    session_critique: str
    session_revision_brief: str
    session_final_note: str
    craft_questions: list[str] = Field(min_length=1)
    bad_poem_topics: list[str] = Field(min_length=1)


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise PoetryConfigError(f"{path}: missing config file") from exc
    except UnicodeDecodeError as exc:
        raise PoetryConfigError(f"{path}: not UTF-8 ({exc})") from exc
    if not text:
        raise PoetryConfigError(f"{path}: file is empty")
    return text


def _read_yaml(path: Path, model: type[BaseModel]) -> Any:
    """A YAML file through the shared loader: missing, empty and unparsable files, and bad fields, raise
    :class:`PoetryConfigError` naming the file (and field)."""
    return validate_yaml(parse_yaml(_read_text(path), path=path, error=PoetryConfigError), model, path=path,
                         error=PoetryConfigError)


def read_phrase_list(path: Path) -> list[str]:
    """One phrase per line; blank lines and ``#`` comments skipped; lower-cased."""
    phrases = []
    for line in _read_text(path).splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            phrases.append(line.lower())
    return phrases


class PoetryConfig:
    """Lazy access to every poetry config file under one folder (default ``config_dir()/poetry``)."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder else config_dir() / "poetry"

    def file(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str, model: type[BaseModel]) -> Any:
        """Another YAML file of this folder (``eval.yaml``, ``feedback.yaml``) validated into ``model``, with the
        same errors as the files above."""
        return _read_yaml(self.file(name), model)

    @cached_property
    def persona(self) -> str:
        return _read_text(self.file("persona.md"))

    @cached_property
    def persona_condensed(self) -> str:
        return _read_text(self.file("persona_condensed.txt"))

    @cached_property
    def poet_system(self) -> str:
        return _read_text(self.file("poet_system.txt"))

    @cached_property
    def banned_phrases(self) -> list[str]:
        return read_phrase_list(self.file("banned_phrases.txt"))

    @cached_property
    def prompts(self) -> Prompts:
        return _read_yaml(self.file("prompts.yaml"), Prompts)

    @cached_property
    def pipeline(self) -> PipelineSettings:
        return _read_yaml(self.file("pipeline.yaml"), PipelineSettings)

    @cached_property
    def inference(self) -> InferenceSettings:
        return _read_yaml(self.file("inference.yaml"), InferenceSettings)

    def files(self) -> list[Path]:
        """Every config file (for lineage: the catalogue records them as inputs)."""
        return sorted(p for p in self.folder.iterdir() if p.is_file())
