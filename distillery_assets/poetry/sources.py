"""Which edited files each poetry step reads: the leaves of its lineage in the catalogue.

``step_sources(cfg, step)`` lists the files under ``inputs_dir()/poetry`` and ``config_dir()/poetry`` that the
step named ``step`` reads with the configuration ``cfg`` (the persona file depends on the profile's
``educator_persona``, the banned list on ``include_banned_list``). The asset passes them to the catalogue as
inputs; the catalogue records each as a source with its sha256.
"""

from __future__ import annotations

from pathlib import Path

from distillery_assets.poetry.generate import poetry_inputs
from distillery_assets.poetry.raw_poems import load_poems, poem_files
from distillery_assets.poetry.settings import PoetryConfig

# steps whose prompts carry the educator persona as system prompt
EDUCATOR_TASKS = ("critique", "brief", "comparison", "autopsy", "dialogue", "lesson")
STEPS = ("good_poems", "bad_poems", *EDUCATOR_TASKS, "poet_pair", "educator_dataset", "poet_dataset", "sessions")


def _educator_system(cfg: PoetryConfig) -> list[Path]:
    volumes = cfg.pipeline.volumes
    files = [cfg.file("persona.md" if volumes.educator_persona == "full" else "persona_condensed.txt")]
    return files + ([cfg.file("banned_phrases.txt")] if volumes.include_banned_list else [])


def _verse_files_read(n: int) -> list[Path]:
    """The verse files behind the first ``n`` shipped poems (``tasks.verse_briefs`` takes the first ``n`` in sorted
    path order): every file up to the one holding the ``n``-th poem, unreadable ones included, since they decide
    which poems come first. Files after it change nothing, so they are not sources. Fewer poems than ``n``: all."""
    if n <= 0:
        return []
    files = poem_files(poetry_inputs(), "verse")
    poems, _ = load_poems(poetry_inputs(), "verse")
    if len(poems) <= n:
        return files
    folder, last = poetry_inputs() / "verse", poems[n - 1].source  # "verse/<file>" or "verse/<file>:<line>"
    for i, path in enumerate(files):
        rel = f"verse/{path.relative_to(folder).as_posix()}"
        if last == rel or last.startswith(rel + ":"):
            return files[:i + 1]
    return files  # not reached: every poem comes from one of these files


def step_sources(cfg: PoetryConfig, step: str) -> list[Path]:
    """The edited files ``step`` reads (one of :data:`STEPS`); unknown steps raise ValueError naming them."""
    pipeline, prompts = cfg.file("pipeline.yaml"), cfg.file("prompts.yaml")
    if step == "good_poems":
        return [*poem_files(poetry_inputs(), "good"), pipeline]
    if step == "bad_poems":  # the user's drafts; when none of them is usable, the prompts that write some
        drafts = poem_files(poetry_inputs(), "bad")
        return drafts + ([] if load_poems(poetry_inputs(), "bad")[0] else [pipeline, prompts])
    if step in EDUCATOR_TASKS:
        requests = [poetry_inputs() / "requests.txt"] if step == "brief" else []
        return [*requests, pipeline, prompts, *_educator_system(cfg)]
    if step == "poet_pair":  # the LLM's poems (poet system) and the briefs for the shipped verse (educator system)
        verse = _verse_files_read(cfg.pipeline.volumes.verse_pairs)
        return [*verse, pipeline, prompts, cfg.file("poet_system.txt"),
                *(_educator_system(cfg) if verse else [])]
    if step == "educator_dataset":  # quality gate (pipeline + banned list), condensed persona as system
        return [pipeline, cfg.file("banned_phrases.txt"), cfg.file("persona_condensed.txt")]
    if step == "poet_dataset":  # the gate (pipeline + banned list + the verse rule), poet system
        return [pipeline, cfg.file("banned_phrases.txt"), cfg.file("poet_system.txt")]
    if step == "sessions":
        return [cfg.file("inference.yaml"), prompts, cfg.file("persona_condensed.txt"), cfg.file("poet_system.txt")]
    raise ValueError(f"poetry step_sources: unknown step {step!r}; known: {', '.join(STEPS)}")
