"""Test helpers for the filters library: copies of the shipped filter folders to edit, and the real LLM client
over a scripted provider that answers each request with a given reply text."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from distillery_assets.llm import LLMClient
from distillery_assets.paths import repo_root
from tests.support.llm import scripted_client

SHIPPED = repo_root() / "data" / "filters"


def copy_filter(root: Path, name: str = "educational_value", version: int = 1, *, as_version: int | None = None) -> Path:
    """``root/<name>/v<N>`` as a copy of the shipped folder (``as_version`` renames the copy and its version)."""
    target = root / name / f"v{as_version or version}"
    shutil.copytree(SHIPPED / name / f"v{version}", target)
    if as_version is not None:
        edit_config(target, lambda c: c["filter"].__setitem__("version", f"{as_version}.0"))
    return target


def edit_config(folder: Path, change: Callable[[dict], None], file: str = "config.yaml") -> Path:
    path = folder / file
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def oracle_client(reply: Callable[..., str]) -> LLMClient:
    """The real LLM client over a scripted provider answering each call with ``reply(messages, **settings)``
    (``settings["model"]`` is the model asked); the client checks JSON answers against their schema and re-asks
    as it always does. What the provider was asked: ``client.provider.calls``."""
    return scripted_client(reply)


def answer(**scores) -> str:
    return json.dumps(scores)
