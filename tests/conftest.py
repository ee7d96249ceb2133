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


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch):
    """Tests never see the developer's real credentials."""
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FAL_KEY", "HF_TOKEN", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.delenv(key, raising=False)
    os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
