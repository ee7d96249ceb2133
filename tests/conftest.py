"""Shared pytest setup: every test gets its own data directory, so nothing touches the repo's data/."""

import os
from pathlib import Path

import pytest

@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    """A fresh DISTILLERY_DATA_DIR for the test; the catalogue and LLM cache live under it too."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def _isolated_home(tmp_path_factory) -> Path:
    """An empty home folder for the whole session (one, so tools' caches under ~ are built once)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch, _isolated_home):
    """Tests never see the developer's real credentials: the key variables are removed, and HOME points at
    an empty folder, so a file looked up under ``~`` when it is read -- the fal provider's ``~/.env``,
    ``~/.modal.toml`` -- is not the developer's, in a test or in a subprocess it starts."""
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FAL_KEY", "HF_TOKEN", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(_isolated_home))
    monkeypatch.setenv("USERPROFILE", str(_isolated_home))
    os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
