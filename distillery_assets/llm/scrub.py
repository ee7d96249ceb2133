"""Remove credentials from any text that may reach a log, an error, a result or a catalogue row."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), REDACTED),  # OpenAI / Anthropic style keys
    # Authorization header values ("Bearer ...", fal's "Key id:secret"); a token must hold a digit
    (re.compile(r"(?i)\b(bearer|key)(\s+)(?=[A-Za-z_\-:.]*\d)[A-Za-z0-9_\-:.]{8,}"), r"\1\2" + REDACTED),
    (re.compile(r"(?i)((?:x-api-key|api[_-]?key|fal_key)['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1" + REDACTED),
]


class Scrubber:
    """Redacts the current values of the named environment variables plus common key shapes."""

    def __init__(self, env_names: Iterable[str] = ()):
        self.env_names = tuple(env_names)

    def secrets(self) -> list[str]:
        values = [os.environ.get(name, "") for name in self.env_names]
        return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for secret in self.secrets():
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text
