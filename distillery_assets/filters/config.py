"""A filter version's definition: ``config.yaml``, ``prefilter.yaml`` and ``prompt.md``, read strictly.

Layout (seed 004's): ``<filters root>/<name>/v<N>/{config.yaml, prefilter.yaml, prompt.md, README.md}``.
The shipped definitions live in the checkout (``<repo>/data/filters``, ``$DISTILLERY_FILTERS_DIR``
overrides), like every other editable config; what a version produces goes under the data folder (see
:mod:`distillery_assets.filters.paths`). Copying ``v1`` to ``v2`` and editing it makes a new version.

Every model here forbids unknown fields; every error is a :class:`FilterConfigError` (a
``ConfigFileError``) naming the file and the field, e.g. ``.../config.yaml: scoring.dimensions.depth.weight:
Field required``.

:func:`load_filter` reads and cross-checks all three files and returns a :class:`FilterDefinition`.
"""

from __future__ import annotations

import math
import re
import string
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distillery_assets.io.yamlfile import ConfigFileError, load_yaml, validate_yaml
from distillery_assets.paths import config_dir, safe_child

CONFIG_FILE = "config.yaml"
PREFILTER_FILE = "prefilter.yaml"
PROMPT_FILE = "prompt.md"
README_FILE = "README.md"
DEFINITION_FILES = (CONFIG_FILE, PREFILTER_FILE, PROMPT_FILE, README_FILE)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
PROMPT_HEADING = "## PROMPT TEMPLATE"
# placeholders a prompt template may use; ``text`` is required. Literal braces are doubled, as str.format wants.
PROMPT_FIELDS = ("title", "source", "published_date", "text", "dimensions")

# platform assets a filter can score, and the document shape each one gives (see filters/sources.py)
KNOWN_ASSETS = ("story_corpus", "encyclopedia_corpus", "gutenberg_chunks", "theme_chunks")


class FilterConfigError(ConfigFileError):
    """A filter definition file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------ config.yaml

class FilterInfo(_Strict):
    name: str
    version: str  # "1.0": the major number must equal the folder's v<N>
    created: str | None = None
    updated: str | None = None
    description: str
    focus: str | None = None
    changelog: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a filter name (lower-case letters, digits, '_' and '-')")
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> str:
        v = str(v)
        if not re.match(r"^\d+(\.\d+)*$", v):
            raise ValueError(f"{v!r} is not a version like '1.0'")
        return v

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


class AssetSource(_Strict):
    """Documents of a platform asset (its materialized files)."""

    kind: Literal["asset"]
    asset: Literal["story_corpus", "encyclopedia_corpus", "gutenberg_chunks", "theme_chunks"]
    limit: int | None = Field(default=None, ge=1, description="at most this many documents, spread evenly")


class JsonlSource(_Strict):
    """A JSONL file of articles ``{id, title, content, url, source, published_date}``; a relative path is
    taken from the filter's version folder."""

    kind: Literal["jsonl"]
    path: str
    limit: int | None = Field(default=None, ge=1)


class HubFields(_Strict):
    """Which column of the Hub dataset gives each document field (``null``: left empty)."""

    id: str | None = "id"
    title: str | None = None
    content: str = "text"
    url: str | None = None
    source: str | None = None
    published_date: str | None = None


class HubSource(_Strict):
    """A Hugging Face dataset, streamed (``datasets.load_dataset(..., streaming=True)``), first ``limit`` rows."""

    kind: Literal["hub"]
    dataset: str
    config_name: str | None = None
    split: str = "train"
    data_files: list[str] | None = None  # for file builders ("json", "parquet", "text")
    revision: str | None = None
    fields: HubFields = Field(default_factory=HubFields)
    limit: int = Field(default=1000, ge=1)


Source = Annotated[Union[AssetSource, JsonlSource, HubSource], Field(discriminator="kind")]


class PrefilterSettings(_Strict):
    enabled: bool = True
    expected_pass_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    pass_rate_tolerance: float = Field(default=0.1, ge=0.0, le=1.0,
                                       description="the pass rate is as expected within this many (absolute)")
    description: str | None = None


class OracleSettings(_Strict):
    """``mode: llm`` asks the LLM resource; ``mode: labels`` reads existing labels (``labels`` path)."""

    mode: Literal["llm", "labels"] = "llm"
    model: str | None = None  # None: the LLM resource's default model
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    max_tokens: int = Field(default=300, ge=16)
    max_words: int = Field(default=800, ge=50, description="content compressed to this many words")
    head_fraction: float = Field(default=0.7, gt=0.0, lt=1.0)
    max_documents: int | None = Field(default=None, ge=1, description="label at most this many passed documents")
    labels: str | None = None  # mode labels: JSONL path (relative: from the version folder)
    agreement_model: str | None = None  # a second oracle for filter_oracle_agreement
    agreement_sample: int = Field(default=20, ge=2)
    recommended: str | None = None
    candidates: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _labels_path(self) -> OracleSettings:
        if self.mode == "labels" and not self.labels:
            raise ValueError("mode 'labels' needs 'labels' (the JSONL file of existing labels)")
        return self


class GatekeeperException(_Strict):
    """The gate does not close when ``dimension`` scores at least ``threshold`` (and, if given, the gated
    dimension itself at least ``min_gated_score``)."""

    dimension: str
    threshold: float
    min_gated_score: float | None = None


class Dimension(_Strict):
    weight: float = Field(ge=0.0, le=1.0)
    description: str = Field(min_length=1)
    scale: str = Field(min_length=1, description="what low, middle and high scores mean")
    gatekeeper: bool = False
    gatekeeper_threshold: float | None = None
    gatekeeper_max_score: float | None = None
    gatekeeper_exception: GatekeeperException | None = None
    # the theme keyword sets (data/config/theme/theme_keywords.json) this dimension draws on, if any:
    # documentation, and the known signal of the labels-with-signal training test
    keyword_themes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _gate(self) -> Dimension:
        if self.gatekeeper and (self.gatekeeper_threshold is None or self.gatekeeper_max_score is None):
            raise ValueError("a gatekeeper dimension needs gatekeeper_threshold and gatekeeper_max_score")
        if not self.gatekeeper and (self.gatekeeper_threshold is not None or self.gatekeeper_max_score is not None
                                    or self.gatekeeper_exception is not None):
            raise ValueError("gatekeeper_* fields need 'gatekeeper: true'")
        return self


class Tier(_Strict):
    threshold: float
    description: str


class CapCondition(_Strict):
    dimension: str
    below: float


class ContentTypeCap(_Strict):
    """Caps the overall score at ``max_score`` when the oracle says the document is of this type, or a
    trigger phrase occurs in title or content and no exception phrase does; ``condition`` restricts it
    further (only while ``dimension`` scores below ``below``)."""

    max_score: float
    description: str | None = None
    triggers: list[str] = Field(default_factory=list)
    exceptions: list[str] = Field(default_factory=list)
    condition: CapCondition | None = None


class GatekeeperRule(_Strict):
    threshold: float
    max_overall_if_below: float
    reasoning: str | None = None


class Scoring(_Strict):
    min_score: float = 0.0
    max_score: float = 10.0
    integer_scores: bool = True  # the oracle answers whole numbers (easier for small models under a grammar)
    dimensions: dict[str, Dimension] = Field(min_length=1)
    tiers: dict[str, Tier] = Field(min_length=1)
    content_type_caps: dict[str, ContentTypeCap] = Field(default_factory=dict)
    gatekeeper_rules: dict[str, GatekeeperRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Scoring:
        if not self.min_score < self.max_score:
            raise ValueError("min_score must be below max_score")
        for name in self.dimensions:
            if not NAME_RE.match(name) or "-" in name:
                raise ValueError(f"dimensions.{name}: a dimension name is lower-case letters, digits and '_'")
            if name in ("content_type", "reasoning"):
                raise ValueError(f"dimensions.{name}: the name is reserved for the oracle's answer")
        total = sum(d.weight for d in self.dimensions.values())
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            raise ValueError(f"dimensions: the weights sum to {total:.4f}, not 1.0")
        for name, dim in self.dimensions.items():
            exc = dim.gatekeeper_exception
            if exc is not None and exc.dimension not in self.dimensions:
                raise ValueError(f"dimensions.{name}.gatekeeper_exception.dimension: no dimension {exc.dimension!r}")
        for name in self.gatekeeper_rules:
            if name not in self.dimensions:
                raise ValueError(f"gatekeeper_rules.{name}: no dimension of that name")
        for name, cap in self.content_type_caps.items():
            if cap.condition is not None and cap.condition.dimension not in self.dimensions:
                raise ValueError(f"content_type_caps.{name}.condition.dimension: no dimension "
                                 f"{cap.condition.dimension!r}")
        lowest = min(t.threshold for t in self.tiers.values())
        if lowest > self.min_score:
            raise ValueError(f"tiers: the lowest threshold ({lowest}) is above min_score ({self.min_score}); "
                             "every document needs a tier")
        return self

    @property
    def dimension_names(self) -> list[str]:
        return list(self.dimensions)

    def tiers_descending(self) -> list[tuple[str, Tier]]:
        return sorted(self.tiers.items(), key=lambda kv: kv[1].threshold, reverse=True)


class Training(_Strict):
    """What ``filter_model`` trains and how the ground truth is split. The recipe fields carry the names of
    the trainer's ``FilterTrainConfig`` (distillery_assets/filters/train.py); :meth:`trainer_fields` is
    the dict to build it from (``options`` passes any other trainer field through, checked there).

    ``mode: auto`` (the default) compares candidate heads and keeps the best by validation MAE: ``candidates``
    (default: ridge and mlp, plus full_finetune where a GPU is present), ``learning_rates`` / ``max_epochs`` by
    candidate name. A single mode (``frozen_head``, ``full_finetune``, ``lora``) trains that one, with
    ``learning_rate`` and ``epochs`` (unset: the trainer's recommended values)."""

    mode: Literal["auto", "frozen_head", "full_finetune", "lora"] = "auto"
    candidates: list[Literal["ridge", "mlp", "frozen_head", "full_finetune", "lora"]] | None = None
    base_model: str = "embedded:all-MiniLM-L6-v2"  # the shipped encoder; or an HF id
    lora_base_model: str | None = None  # the LoRA candidate's base (Qwen/Qwen2.5-0.5B in the seed)
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float | None = Field(default=None, gt=0.0)
    learning_rates: dict[str, float] = Field(default_factory=dict)
    max_epochs: dict[str, int] = Field(default_factory=dict)
    patience: int | None = Field(default=None, ge=1)
    include_title: bool | None = None  # None: off for file-name titles, else what validation prefers
    max_length: int = Field(default=256, ge=8)
    warmup_steps: int = Field(default=0, ge=0)
    seed: int = 42
    options: dict[str, Any] = Field(default_factory=dict)
    # splits
    train_ratio: float = Field(default=0.8, gt=0.0, lt=1.0)
    val_ratio: float = Field(default=0.1, gt=0.0, lt=1.0)
    # judging and documentation
    binary_tier: str | None = None  # the tier whose threshold is "positive" for precision/recall/F1
    target_samples: int | None = Field(default=None, ge=1)
    expected_accuracy: str | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "mode", "candidates", "base_model", "lora_base_model", "epochs", "batch_size", "learning_rate",
        "learning_rates", "max_epochs", "patience", "include_title", "max_length", "warmup_steps", "seed")

    @model_validator(mode="after")
    def _ratios(self) -> Training:
        if self.train_ratio + self.val_ratio >= 1.0:
            raise ValueError("train_ratio + val_ratio must leave a test share")
        clash = sorted(set(self.options) & set(self.FIELDS))
        if clash:
            raise ValueError(f"options: {clash} are fields of training itself; set them there")
        return self

    def trainer_fields(self) -> dict[str, Any]:
        """The trainer's settings: every recipe field that is set (unset ones take the trainer's defaults)."""
        return {**{k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}, **self.options}


class Deployment(_Strict):
    hub_repo: str | None = None  # <user>/<name>; None: derived from the filter name and version
    private: bool = True
    inference_time: str | None = None
    cost_per_article: str | None = None
    use_cases: list[str] = Field(default_factory=list)


class FilterConfig(_Strict):
    filter: FilterInfo
    sources: list[Source] = Field(min_length=1)
    prefilter: PrefilterSettings = Field(default_factory=PrefilterSettings)
    oracle: OracleSettings = Field(default_factory=OracleSettings)
    scoring: Scoring
    training: Training = Field(default_factory=Training)
    deployment: Deployment = Field(default_factory=Deployment)

    @model_validator(mode="after")
    def _binary_tier(self) -> FilterConfig:
        if self.training.binary_tier is not None and self.training.binary_tier not in self.scoring.tiers:
            raise ValueError(f"training.binary_tier: no tier {self.training.binary_tier!r}")
        return self


# ------------------------------------------------------------------------------------------ prefilter.yaml

class _Rule(_Strict):
    reason: str = Field(min_length=1, description="the name a blocked (or passed) document is logged with")
    description: str | None = None

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9_]+$", v):
            raise ValueError(f"{v!r}: a reason name is lower-case letters, digits and '_'")
        return v


class MinLengthRule(_Rule):
    kind: Literal["min_length"]
    chars: int = Field(ge=1)


class DomainsRule(_Rule):
    """Blocks documents whose url's host is one of ``domains`` or a subdomain of one."""

    kind: Literal["excluded_domains"]
    domains: list[str] = Field(min_length=1)


class BlockKeywordsRule(_Rule):
    """Blocks documents containing any keyword (whole words, case-insensitive) in title or content."""

    kind: Literal["block_keywords"]
    keywords: list[str] = Field(min_length=1)
    min_hits: int = Field(default=1, ge=1)


class PassKeywordsRule(_Rule):
    """Passes at once (later rules not asked) documents containing any keyword."""

    kind: Literal["pass_keywords"]
    keywords: list[str] = Field(min_length=1)


class RegexRule(_Rule):
    """Blocks documents matching any pattern unless one of ``exceptions`` matches too (case-insensitive)."""

    kind: Literal["regex"]
    patterns: list[str] = Field(min_length=1)
    exceptions: list[str] = Field(default_factory=list)

    @field_validator("patterns", "exceptions")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for i, pattern in enumerate(v):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"#{i} {pattern!r} is not a regular expression: {exc}") from exc
        return v


class ThemeKeywordsRule(_Rule):
    """The theme pipeline's keyword filter, reused: blocks documents whose keyword total (distinct whole-word
    keywords per theme, summed; distillery_assets.theme.keywords) is below ``min_matches``. ``file`` is
    relative to the project's config folder (data/config)."""

    kind: Literal["theme_keywords"]
    file: str = "theme/theme_keywords.json"
    min_matches: int = Field(default=2, ge=1)


Rule = Annotated[Union[MinLengthRule, DomainsRule, BlockKeywordsRule, PassKeywordsRule, RegexRule,
                       ThemeKeywordsRule], Field(discriminator="kind")]


class PrefilterRules(_Strict):
    """Rules asked in order; the first that blocks (or passes) decides; a document no rule decides passes
    with reason ``passed``."""

    version: str = "1"
    description: str | None = None
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> str:
        return str(v)


# ------------------------------------------------------------------------------------------ prompt.md

class PromptTemplate(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    fields: tuple[str, ...]

    def render(self, **values: str) -> str:
        return self.text.format(**{k: values.get(k, "") for k in self.fields})


_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})[^\n`]*$")


def parse_prompt(path: Path, text: str) -> PromptTemplate:
    """The template: the first fenced block after the ``## PROMPT TEMPLATE`` heading (before the next
    heading of level 1 or 2). Errors name the file and the line."""
    lines = text.splitlines()
    heading = next((i for i, line in enumerate(lines) if line.strip().upper() == PROMPT_HEADING), None)
    if heading is None:
        raise FilterConfigError(f"{path}: no '{PROMPT_HEADING}' heading (the oracle prompt goes in a fenced "
                                "block under it)")
    start = fence = None
    for i in range(heading + 1, len(lines)):
        stripped = lines[i].strip()
        if re.match(r"^#{1,2}\s", stripped):
            break
        m = _FENCE_OPEN.match(stripped)
        if m:
            start, fence = i, m.group(1)
            break
    if start is None:
        raise FilterConfigError(f"{path}:{heading + 1}: '{PROMPT_HEADING}' has no fenced ``` block under it")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].strip().startswith(fence[0] * len(fence)) and not lines[i].strip().strip(fence[0])),
               None)
    if end is None:
        raise FilterConfigError(f"{path}:{start + 1}: the template's fenced block is never closed")
    body = "\n".join(lines[start + 1:end]).strip("\n")
    if not body.strip():
        raise FilterConfigError(f"{path}:{start + 1}: the prompt template is empty")
    try:
        used = [name for _, name, _, _ in string.Formatter().parse(body) if name is not None]
    except ValueError as exc:
        raise FilterConfigError(f"{path}:{start + 1}: template is not a str.format template ({exc}); "
                                "write literal braces as {{ and }}") from exc
    unknown = sorted({u for u in used if u not in PROMPT_FIELDS})
    if unknown:
        raise FilterConfigError(f"{path}:{start + 1}: unknown placeholder(s) {unknown}; allowed: "
                                f"{list(PROMPT_FIELDS)} (write literal braces as {{{{ and }}}})")
    if "text" not in used:
        raise FilterConfigError(f"{path}:{start + 1}: the template never uses {{text}} (the document)")
    return PromptTemplate(text=body, fields=tuple(dict.fromkeys(used)))


# ------------------------------------------------------------------------------------------ the whole version

class FilterDefinition(BaseModel):
    """One filter version as read from its folder."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    version: int
    folder: Path
    config: FilterConfig
    prefilter: PrefilterRules
    prompt: PromptTemplate | None
    """None only in ``oracle: labels`` mode without a ``prompt.md`` (nothing asks an oracle then)."""

    @property
    def dimensions(self) -> list[str]:
        return self.config.scoring.dimension_names

    def resolve(self, relative: str) -> Path:
        """A path from the config (labels file, JSONL source): absolute as given, else from the folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.folder / p).resolve()


def load_config(path: Path) -> FilterConfig:
    return load_yaml(path, FilterConfig, error=FilterConfigError)


def load_prefilter(path: Path) -> PrefilterRules:
    raw = load_yaml(path, error=FilterConfigError, what="prefilter rules")
    if raw is None:
        raw = {}
    return validate_yaml(raw, PrefilterRules, path=path, error=FilterConfigError)


def load_prompt(path: Path) -> PromptTemplate:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FilterConfigError(f"{path}: oracle prompt not found (required in oracle mode llm; optional with "
                                "oracle: {mode: labels})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise FilterConfigError(f"{path}: cannot read: {exc}") from exc
    return parse_prompt(Path(path), text)


def load_filter(folder: str | Path) -> FilterDefinition:
    """Read ``config.yaml``, ``prefilter.yaml`` and ``prompt.md`` of a version folder ``<name>/v<N>``."""
    folder = Path(folder).resolve()
    m = re.match(r"^v(\d+)$", folder.name)
    if not m:
        raise FilterConfigError(f"{folder}: a filter version folder is named v<N>")
    version = int(m.group(1))
    config_path = folder / CONFIG_FILE
    config = load_config(config_path)
    if config.filter.name != folder.parent.name:
        raise FilterConfigError(f"{config_path}: filter.name: {config.filter.name!r} differs from the folder name "
                                f"{folder.parent.name!r}")
    if config.filter.major != version:
        raise FilterConfigError(f"{config_path}: filter.version: {config.filter.version!r} does not match the "
                                f"folder v{version} (major version must be {version})")
    prefilter = load_prefilter(folder / PREFILTER_FILE)
    for i, rule in enumerate(prefilter.rules):
        if isinstance(rule, ThemeKeywordsRule):
            _theme_keywords_file(rule, folder / PREFILTER_FILE, i)
    # the prompt is the oracle's: in mode labels nothing reads it, so it may be absent (one that is there is checked)
    prompt_path = folder / PROMPT_FILE
    prompt = None if config.oracle.mode == "labels" and not prompt_path.exists() else load_prompt(prompt_path)
    if config.oracle.mode == "labels":
        labels = Path(config.oracle.labels).expanduser()
        labels = labels if labels.is_absolute() else folder / labels
        if not labels.exists():
            raise FilterConfigError(f"{config_path}: oracle.labels: {config.oracle.labels!r} not found")
    for i, src in enumerate(config.sources):
        if isinstance(src, JsonlSource):
            p = Path(src.path).expanduser()
            p = p if p.is_absolute() else folder / p
            if not p.exists():
                raise FilterConfigError(f"{config_path}: sources.{i}.path: {src.path!r} not found")
    return FilterDefinition(name=config.filter.name, version=version, folder=folder, config=config,
                            prefilter=prefilter, prompt=prompt)


def _theme_keywords_file(rule: ThemeKeywordsRule, path: Path, index: int) -> Path:
    try:
        target = safe_child(config_dir(), rule.file, source=f"{path}: rules.{index}.file")
    except ValueError as exc:
        raise FilterConfigError(str(exc)) from exc
    if not target.exists():
        raise FilterConfigError(f"{path}: rules.{index}.file: {target} not found")
    return target


def theme_keywords_path(rule: ThemeKeywordsRule) -> Path:
    return safe_child(config_dir(), rule.file, source="prefilter theme_keywords file")
