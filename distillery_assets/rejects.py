"""The one reject record for input that cannot be used: where it came from and why (``{source, reason}``).

Corpus prompt lines, poem files and chat-data records all reject with it; the reject logs they write are its
:meth:`Reject.to_dict`. Rejects that carry more than these two fields (a book id, a label field, an LLM task
key with detail) keep their own types beside their readers."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Reject:
    source: str  # a file, "file:line", a dataset row: where the rejected input came from
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"
