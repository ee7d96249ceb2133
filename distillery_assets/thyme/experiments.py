"""Thyme experiments: one YAML file per experiment under ``data/config/thyme/``, ``<name>.yaml``.

An experiment is a whole recipe: where the text comes from (``corpus``), how it is cut and split
(``dataset``), the tokenizer, one or more named models (``models``: ThymeLM or a Llama-style transformer),
and the training profile they share. The file names are the experiments' names, and so the partitions
of every thyme asset: a new file is a new partition.

Unknown keys are errors, and an unknown ``architecture`` is an error naming the model's field, so a typo
never falls back to a default silently. Every error names the file and the field (``io.yamlfile``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery_assets.io.hashing import json_fingerprint
from distillery_assets.io.yamlfile import ConfigFileError, read_yaml, validate_yaml

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "data" / "config" / "thyme"
SUFFIX = ".yaml"


class ExperimentError(ConfigFileError):
    """An experiment file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------ corpus

class LocalSource(_Strict):
    """A folder of ``.txt`` books with a ``manifest.jsonl`` (relative paths are against the repository)."""

    kind: Literal["local"]
    path: str = "data/inputs/thyme_books"
    files: list[str] | None = Field(default=None, description="only these file names (default: every .txt)")
    max_chars_per_book: int | None = Field(default=None, gt=0, description="cut each cleaned book (a slice)")


class PlatformSource(_Strict):
    """The platform's own documents: the corpus pipeline's ``.corpus`` files, the theme pipeline's chunks."""

    kind: Literal["platform"]
    assets: list[Literal["corpus", "theme_chunks"]] = Field(default_factory=lambda: ["corpus", "theme_chunks"],
                                                            min_length=1)


class HubGutenbergSource(_Strict):
    """``manu/project_gutenberg``, streamed; the split is the language (the seed: ``en``)."""

    kind: Literal["hf_gutenberg"]
    dataset: str = "manu/project_gutenberg"
    language: str = "en"
    max_books: int | None = Field(default=None, gt=0)


class HubWikipediaSource(_Strict):
    """``wikipedia`` ``20220301.<language>``, streamed, split ``train``."""

    kind: Literal["hf_wikipedia"]
    dataset: str = "wikipedia"
    dump: str = "20220301"
    language: str = "en"
    max_articles: int | None = Field(default=None, gt=0)


Source = Annotated[LocalSource | PlatformSource | HubGutenbergSource | HubWikipediaSource,
                   Field(discriminator="kind")]


class CorpusRecipe(_Strict):
    sources: list[Source] = Field(min_length=1)
    min_book_chars: int = Field(default=10_000, ge=0, description="a raw book shorter than this is skipped")
    min_clean_chars: int = Field(default=5_000, ge=0, description="a cleaned book shorter than this is dropped")
    min_article_chars: int = Field(default=500, ge=0, description="an article shorter than this is skipped")


# ----------------------------------------------------------------------------------------------- dataset

class DatasetRecipe(_Strict):
    """Chunks of paragraphs, split by chunk, then windows of ``window + 1`` tokens."""

    chunk_chars: int = Field(default=500, gt=0, description="paragraphs are packed while shorter than this")
    min_chunk_chars: int = Field(default=0, ge=0, description="drop chunks of at most this many characters")
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    split_seed: int = 42
    window: int = Field(default=128, gt=8, description="tokens the model reads per sample (the seed's MAX_LEN)")
    stride: int | None = Field(default=None, gt=0, description="window start step (default window // 2)")
    min_window_tokens: int = Field(default=11, gt=1, description="shorter windows are skipped (the seed: > 10)")

    @property
    def window_stride(self) -> int:
        return self.stride or self.window // 2


class TokenizerRecipe(_Strict):
    kind: Literal["bpe"] = "bpe"
    vocab_size: int = Field(gt=4)
    min_frequency: int = Field(default=2, gt=0)
    train_on: Literal["train", "all"] = Field(
        default="train", description="train: training chunks only; all: the seed's leak (validation included)")
    max_training_chunks: int | None = Field(default=None, gt=0, description="sample at most this many chunks")


# ------------------------------------------------------------------------------------------------ models

class TrainingOverrides(_Strict):
    """Per-model changes to the experiment's training profile (e.g. another learning rate)."""

    learning_rate: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    epochs: int | None = Field(default=None, gt=0)
    amp: bool | None = Field(default=None, description="the profile's amp for this model only")


class ThymeArchitecture(_Strict):
    """:class:`~distillery_assets.thyme.model.ThymeConfig` fields (the vocabulary comes from the tokenizer)."""

    architecture: Literal["thyme"]
    variant: Literal["books", "corpus"] = "books"
    embed_dim: int = Field(default=256, gt=0)
    hidden: int = Field(default=512, gt=0)
    n_layers: int = Field(default=1, gt=0)
    max_positions: int | None = Field(default=None, gt=0)
    chain_layers: bool = True
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    training: TrainingOverrides | None = None

    def thyme_config(self, vocab_size: int):
        from distillery_assets.thyme.model import ThymeConfig

        body = self.model_dump(exclude={"architecture", "training"})
        return ThymeConfig(vocab_size=vocab_size, **body)


class LlamaArchitecture(_Strict):
    """A Llama-style decoder built from a ``transformers.LlamaConfig``, randomly initialised."""

    architecture: Literal["llama"]
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = Field(default=None, gt=0)
    max_position_embeddings: int = Field(default=512, gt=0)
    tie_word_embeddings: bool = True
    rope_theta: float = Field(default=10_000.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="attention dropout")
    training: TrainingOverrides | None = None

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        return self


Architecture = Annotated[ThymeArchitecture | LlamaArchitecture, Field(discriminator="architecture")]


# -------------------------------------------------------------------------------------------- training

class TrainingProfile(_Strict):
    batch_size: int = Field(gt=0)
    epochs: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    grad_accum: int = Field(default=1, gt=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    amp: bool = Field(default=False, description="mixed precision where the device runs it natively: bf16 autocast on "
                      "CUDA (fp16 with a gradient scaler where bf16 is missing) and on CPUs with AVX-512 BF16/AMX; "
                      "fp32 elsewhere")
    max_steps: int | None = Field(default=None, gt=0)
    patience: int | None = Field(default=None, gt=0, description=(
        "stop once this many epochs in a row have not lowered the best validation loss (None: every epoch). The "
        "schedule is still planned for all epochs, so the epochs run are those of the full run; latest/ is kept and "
        "a later run without patience carries on from it"))
    checkpoint_every: int | None = Field(default=None, gt=0)
    log_every: int = Field(default=100, gt=0)
    threads: int | None = Field(default=None, gt=0)
    seed: int = 42
    eval_batch_size: int | None = Field(default=None, gt=0, description="default: batch_size (the seed: same)")


class Experiment(_Strict):
    description: str = ""
    corpus: CorpusRecipe
    dataset: DatasetRecipe = DatasetRecipe()
    tokenizer: TokenizerRecipe
    models: dict[str, Architecture] = Field(min_length=1)
    training: TrainingProfile
    name: str = Field(default="", description="set from the file name; not written in the file")

    @model_validator(mode="after")
    def _positions_cover_the_window(self):
        for key, arch in self.models.items():
            if isinstance(arch, LlamaArchitecture) and arch.max_position_embeddings < self.dataset.window + 1:
                raise ValueError(f"models.{key}.max_position_embeddings must be at least window + 1 "
                                 f"({self.dataset.window + 1})")
        return self

    def training_for(self, model_key: str) -> TrainingProfile:
        """The training profile with ``models.<key>.training`` applied."""
        over = self.models[model_key].training
        if over is None:
            return self.training
        changes = {k: v for k, v in over.model_dump().items() if v is not None}
        return self.training.model_copy(update=changes)

    def fingerprint(self, part: str = "all") -> str:
        """A stable hash of what shapes an artefact: ``corpus``, ``dataset`` (corpus + split + tokenizer)
        or ``all``. Settings that change only how a run is carried out are left out."""
        body = self.model_dump(exclude={"description", "name"})
        if part == "corpus":
            body = {"corpus": body["corpus"]}
        elif part == "dataset":
            body = {k: body[k] for k in ("corpus", "dataset", "tokenizer")}
        else:
            body["training"] = {k: v for k, v in body["training"].items() if k not in ("checkpoint_every", "log_every", "patience")}
        return json_fingerprint(body)


def experiment_path(name: str, folder: Path | None = None) -> Path:
    return Path(folder or EXPERIMENTS_DIR) / f"{name}{SUFFIX}"


def experiment_names(folder: Path | None = None) -> list[str]:
    """The experiments (the static partitions of the thyme assets): one per ``*.yaml`` file, sorted."""
    folder = Path(folder or EXPERIMENTS_DIR)
    return sorted(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))


def load_experiment(name_or_path: str | Path, folder: Path | None = None) -> Experiment:
    """Read and validate one experiment file; errors name the file and the field."""
    path = Path(name_or_path)
    if path.suffix != SUFFIX:
        path = experiment_path(str(name_or_path), folder)
    if not path.exists():
        known = ", ".join(experiment_names(path.parent)) or "none"
        raise ExperimentError(f"{path}: no such experiment file (experiments: {known})")
    raw = read_yaml(path, error=ExperimentError, what="thyme experiment")
    if isinstance(raw, dict) and "name" in raw:
        raise ExperimentError(f"{path}: name: the experiment's name is its file name; remove the field")
    exp = validate_yaml(raw, Experiment, path=path, error=ExperimentError)
    return exp.model_copy(update={"name": path.name[: -len(SUFFIX)]})


def warmup_ratio(warmup_steps: int, total_steps: int) -> float:
    """``warmup_steps`` as the shared loop's ``warmup_ratio`` (it warms up ``ceil(ratio * total)`` steps)."""
    if warmup_steps <= 0 or total_steps <= 0:
        return 0.0
    steps = min(warmup_steps, total_steps - 1)
    ratio = (steps - 0.5) / total_steps
    assert math.ceil(ratio * total_steps) == steps
    return ratio
