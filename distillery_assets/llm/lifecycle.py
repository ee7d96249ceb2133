"""When a model reaches its end of life, by the installed SDKs' own tables (no network).

* anthropic: ``DEPRECATED_MODELS`` (``{"claude-sonnet-4-5": "November 30th, 2026", ...}``) in
  ``anthropic.resources.messages.messages`` (and ``anthropic._data``), the table the SDK warns from on every
  ``messages.create``;
* openai: the "Deprecated values" list of ``openai/types/shared/chat_model.py`` (``"gpt-4o-mini", ...:
  Announced shutdown date: 2027-01-14``), the only place openai 3.x records shutdown dates.

``end_of_life(provider, model)`` is the date (None: the tables do not list the model), ``check(...)`` a
:class:`ModelLifecycle` with ``past`` and a sentence for a warning. Settings warn at start-up and the LLM
resource adds the lifecycle to an asset's metadata (``llm.settings.lifecycle_warning``). An SDK whose table
moved or changed shape gives "unknown" (None), never an error.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class ModelLifecycle:
    provider: str
    model: str
    end_of_life: date
    source: str  # which SDK table said so, e.g. "anthropic 2.12.0"
    today: date

    @property
    def past(self) -> bool:
        return self.today >= self.end_of_life

    def message(self) -> str:
        when = self.end_of_life.isoformat()
        if self.past:
            return (f"LLM model {self.model!r} ({self.provider}) reached its end of life on {when} by the {self.source} "
                    f"SDK's table: the API will refuse it. Set DISTILLERY_LLM_MODEL to a current model.")
        return (f"LLM model {self.model!r} ({self.provider}) is deprecated: end of life {when} by the {self.source} "
                f"SDK's table. Plan to set DISTILLERY_LLM_MODEL to a current model.")

    def metadata(self) -> dict[str, str | bool]:
        return {"llm_model": self.model, "llm_model_end_of_life": self.end_of_life.isoformat(),
                "llm_model_past_end_of_life": self.past, "llm_model_lifecycle_source": self.source}


def _parse_anthropic_date(text: str) -> date | None:
    """"November 30th, 2026" -> 2026-11-30."""
    cleaned = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", text.strip())
    try:
        return datetime.strptime(cleaned, "%B %d, %Y").date()
    except ValueError:
        return None


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return package


@lru_cache(maxsize=1)
def anthropic_table() -> dict[str, date]:
    """Model id -> end of life, from the installed anthropic SDK (empty when it has no table)."""
    tables: list[dict] = []
    try:
        from anthropic.resources.messages import messages as _messages

        tables.append(dict(getattr(_messages, "DEPRECATED_MODELS", {}) or {}))
    except ImportError:
        pass
    try:
        from anthropic import _data

        tables.append(dict(getattr(_data, "DEPRECATED_MODELS", {}) or {}))
    except ImportError:
        pass
    out: dict[str, date] = {}
    for table in tables:
        for model, when in table.items():
            parsed = _parse_anthropic_date(str(when))
            if parsed is not None:
                out[str(model)] = parsed
    return out


_OPENAI_ITEM = re.compile(r"^- (?P<names>.*?):\s*Announced shutdown\s+date:\s*(?P<date>\d{4}-\d{2}-\d{2})",
                          re.DOTALL)


def parse_openai_deprecations(source: str) -> dict[str, date]:
    """The ``"name", "name": Announced shutdown date: YYYY-MM-DD`` items of a "Deprecated values:" docstring."""
    start = source.find("Deprecated values:")
    if start < 0:
        return {}
    text = source[start:]
    end = text.find('"""', 1)
    text = text[:end] if end > 0 else text
    out: dict[str, date] = {}
    for item in re.split(r"\n(?=- )", text):
        item = " ".join(line.strip() for line in item.strip().splitlines())
        match = _OPENAI_ITEM.match(item)
        if not match:
            continue
        when = date.fromisoformat(match.group("date"))
        for name in re.findall(r'"([^"]+)"', match.group("names")):
            out[name] = when
    return out


@lru_cache(maxsize=1)
def openai_table() -> dict[str, date]:
    """Model id -> shutdown date, from the installed openai SDK (empty when it has no such list)."""
    try:
        spec = importlib.util.find_spec("openai.types.shared.chat_model")
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.origin:
        return {}
    try:
        return parse_openai_deprecations(Path(spec.origin).read_text(encoding="utf-8"))
    except OSError:
        return {}


def _table_for(provider: str, model: str) -> tuple[dict[str, date], str, str] | None:
    name = model.strip()
    if provider == "anthropic" or name.startswith("anthropic/"):
        return anthropic_table(), _version("anthropic"), name.removeprefix("anthropic/")
    if provider == "openai" or name.startswith("openai/"):
        return openai_table(), _version("openai"), name.removeprefix("openai/")
    return None


def end_of_life(provider: str, model: str) -> date | None:
    found = _table_for(provider, model)
    if found is None:
        return None
    table, _, name = found
    return table.get(name)


def check(provider: str, model: str | None, today: date | None = None) -> ModelLifecycle | None:
    """The model's lifecycle when an installed SDK's table lists it; None when no table does."""
    if not model:
        return None
    found = _table_for(provider, model)
    if found is None:
        return None
    table, source, name = found
    when = table.get(name)
    if when is None:
        return None
    return ModelLifecycle(provider=provider, model=model, end_of_life=when, source=source,
                          today=today or date.today())
