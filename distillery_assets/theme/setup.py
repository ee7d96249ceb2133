"""Assemble a :class:`ChatMLGenerator` from the editable files in ``data/config/theme/``.

The checkpoint journal lives under a fingerprint of everything that shapes the examples (generation and
validator settings, the bytes of the config files, the LLM target), so changing any of them starts a fresh
journal instead of mixing old and new examples; changing only ``max_chunks`` resumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from distillery_assets.theme import config, keywords
from distillery_assets.theme.generate import ChatMLGenerator, GenerationSettings
from distillery_assets.theme.validate import AnachronismMatcher, ExampleValidator, ValidatorSettings


def build_generator(config_dir: Path, work_dir: Path, settings: GenerationSettings,
                    validator_settings: ValidatorSettings = ValidatorSettings(), llm_target: str = "") -> ChatMLGenerator:
    files = config.generator_files(config_dir)
    personas = config.load_personas(files[0])
    themes = config.load_lines(files[1], "query theme")
    validator = ExampleValidator(
        keywords=keywords.KeywordCounter(keywords.load_keyword_sets(files[3])),
        anachronisms=AnachronismMatcher(config.load_lines(files[2], "anachronism")),
        settings=validator_settings)
    fingerprint = settings.fingerprint(config.file_digest(*files), json.dumps(asdict(validator_settings)), llm_target)
    return ChatMLGenerator(personas, themes, validator, settings,
                           journal_path=Path(work_dir) / fingerprint / "journal.jsonl")
