"""Test helpers for the filters library: copies of the shipped filter folders to edit, and a scripted LLM
client that answers each request with a given reply text (the documented ``complete_batch`` contract)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from distillery_assets.llm.jsonout import JSONReplyError, parse_json_reply
from distillery_assets.llm.types import LLMRequest, LLMResult, Usage
from distillery_assets.paths import repo_root

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


class ScriptedClient:
    """Answers request i with ``reply(request)``; JSON requests are validated against their schema as the
    real client does (a reply that never matches is an ``invalid_json`` error result)."""

    def __init__(self, reply: Callable[[LLMRequest], str]):
        self.reply = reply
        self.requests: list[LLMRequest] = []

    def complete_batch(self, requests, label=None):
        out = []
        for req in requests:
            self.requests.append(req)
            text = self.reply(req)
            parsed, error, kind = None, None, None
            if req.json_schema is not None:
                try:
                    parsed = parse_json_reply(text, req.json_schema)
                except JSONReplyError as exc:
                    error, kind = f"invalid JSON after 1 attempts: {exc.reason}", "invalid_json"
            out.append(LLMResult(ok=error is None, text=text, parsed=parsed, error=error, error_kind=kind,
                                 finish_reason="stop", provider="scripted", model="scripted-1",
                                 request_key=f"k{len(self.requests)}", attempts=1,
                                 usage=Usage(input_tokens=10, output_tokens=5)))
        return out


def answer(**scores) -> str:
    return json.dumps(scores)
