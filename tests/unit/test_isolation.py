"""The autouse no-real-keys fixture (tests/conftest.py) also hides the developer's ``~/.env``: a FAL_KEY
planted there is visible to the fal provider outside pytest and invisible inside it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillery_assets.llm.errors import ConfigError
from distillery_assets.llm.providers.fal_router import FalProvider, read_key
from distillery_assets.paths import repo_root

PLANTED = "fal-planted-key:do-not-use"


def test_home_env_file_is_not_the_developers():
    home = Path.home()
    assert home == Path(os.environ["HOME"]) and not (home / ".env").exists()
    assert read_key("FAL_KEY") is None
    with pytest.raises(ConfigError, match="set FAL_KEY in the environment or in ~/.env"):
        FalProvider()._sdk()


def test_a_key_planted_in_the_real_home_env_never_reaches_a_test(tmp_path):
    real_home = tmp_path / "developer"
    real_home.mkdir()
    (real_home / ".env").write_text(f"# my keys\nFAL_KEY={PLANTED}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "PYTEST_ADDOPTS")}
    env["HOME"] = str(real_home)

    outside = subprocess.run(
        [sys.executable, "-c", "from distillery_assets.llm.providers.fal_router import read_key; "
                               "print(read_key('FAL_KEY'))"],
        cwd=repo_root(), env=env, capture_output=True, text=True, timeout=120)
    assert outside.stdout.strip() == PLANTED, outside.stderr  # the plant works: the provider reads ~/.env

    inside = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{Path(__file__).relative_to(repo_root())}::test_home_env_file_is_not_the_developers"],
        cwd=repo_root(), env=env, capture_output=True, text=True, timeout=300)
    assert inside.returncode == 0 and "1 passed" in inside.stdout, inside.stdout[-3000:] + inside.stderr[-2000:]
