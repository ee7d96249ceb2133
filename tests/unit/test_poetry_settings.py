import re
import shutil

import pytest

from distillery_assets.paths import config_dir
from distillery_assets.poetry.settings import PROFILE_ENV, PoetryConfig, PoetryConfigError


@pytest.fixture
def cfg_copy(tmp_path):
    dest = tmp_path / "poetry"
    shutil.copytree(config_dir() / "poetry", dest)
    return dest


def test_shipped_configs_load():
    cfg = PoetryConfig()
    assert cfg.pipeline.volumes.critiques > 0
    assert "delve into" in cfg.banned_phrases
    assert cfg.inference.max_revisions == 3
    assert cfg.inference.sampling.draft.max_tokens > 0
    assert len(cfg.prompts.craft_questions) >= 5


def test_profile_env_override(cfg_copy, monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "full")
    assert PoetryConfig(cfg_copy).pipeline.volumes.critiques == 400
    monkeypatch.setenv(PROFILE_ENV, "nope")
    with pytest.raises(PoetryConfigError, match="profile 'nope'"):
        _ = PoetryConfig(cfg_copy).pipeline.volumes


def test_bad_field_names_file_and_field(cfg_copy):
    p = cfg_copy / "pipeline.yaml"
    text, n = re.subn(r"(?m)^(    critiques:) \d+", r"\1 -1", p.read_text(), count=1)
    assert n == 1
    p.write_text(text)
    with pytest.raises(PoetryConfigError, match=r"pipeline.yaml: .*profiles\.small\.critiques"):
        _ = PoetryConfig(cfg_copy).pipeline


def test_missing_and_empty_files(cfg_copy):
    (cfg_copy / "persona.md").unlink()
    (cfg_copy / "poet_system.txt").write_text("  \n")
    cfg = PoetryConfig(cfg_copy)
    with pytest.raises(PoetryConfigError, match="persona.md: missing"):
        _ = cfg.persona
    with pytest.raises(PoetryConfigError, match="poet_system.txt: file is empty"):
        _ = cfg.poet_system
