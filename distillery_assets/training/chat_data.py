"""ChatML JSONL -> token ids + labels for supervised fine-tuning.

Each input line is ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (extra
keys such as ``metadata`` are ignored). The conversation is rendered with the model's own chat template.
Labels are ``-100`` (ignored by the loss) everywhere except the tokens of assistant turns, including the
end-of-turn token, so the model learns to answer *and to stop*, not to reproduce system prompts and
questions (the original scripts put loss on the whole sequence).

Sequences longer than ``max_seq`` are cut on the right and counted; an example whose assistant tokens
all fall beyond the cut is rejected with a reason instead of silently training on nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery_assets.io import JsonlError, iter_jsonl
from distillery_assets.rejects import Reject

log = logging.getLogger(__name__)

IGNORE = -100
ROLES = {"system", "user", "assistant"}


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    source: str  # "file:line"

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass
class TokenizedSplit:
    examples: list[Example] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    truncated: int = 0
    read: int = 0

    def stats(self) -> dict[str, Any]:
        lengths = [len(e.input_ids) for e in self.examples]
        return {
            "read": self.read,
            "examples": len(self.examples),
            "rejected": len(self.rejects),
            "truncated": self.truncated,
            "tokens": sum(lengths),
            "target_tokens": sum(e.target_tokens for e in self.examples),
            "max_len": max(lengths, default=0),
        }


def validate_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """Return the record's messages or raise ValueError saying which field is wrong."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("field 'messages' missing or not a non-empty list")
    clean = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ValueError(f"messages[{i}] is not an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role {role!r} is not one of {sorted(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{i}].content is empty or not a string")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's reply")
    return clean


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_messages(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels that keep only assistant-turn tokens."""
    ids = _render(tokenizer, messages, generation_prompt=False)
    labels = [IGNORE] * len(ids)
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], generation_prompt=True)
        # The rendered prefix must be a token prefix of the full conversation, or the mask would be off.
        if ids[: len(prefix)] != prefix:
            raise ValueError("chat template does not render the conversation prefix stably; cannot mask")
        end = len(_render(tokenizer, messages[: i + 1], generation_prompt=False))
        for t in range(len(prefix), min(end, len(ids))):
            labels[t] = ids[t]
    return ids, labels


def load_chat_split(
    path: Path, tokenizer: Any, *, max_seq: int, limit: int | None = None
) -> TokenizedSplit:
    """Read, validate, tokenize and mask one ChatML JSONL file. Bad lines become rejects with reasons."""
    path = Path(path)
    split = TokenizedSplit()
    for line_no, record in iter_jsonl(path, on_error="yield"):
        if limit is not None and len(split.examples) >= limit:
            break
        source = f"{path.name}:{line_no}"
        split.read += 1
        if isinstance(record, JsonlError):
            split.rejects.append(Reject(source, record.reason))
            continue
        try:
            messages = validate_messages(record)
            ids, labels = tokenize_messages(tokenizer, messages)
        except ValueError as exc:
            split.rejects.append(Reject(source, str(exc)))
            continue
        if len(ids) > max_seq:
            ids, labels = ids[:max_seq], labels[:max_seq]
            split.truncated += 1
        if all(label == IGNORE for label in labels[1:]):
            split.rejects.append(Reject(source, f"no assistant tokens within max_seq={max_seq}"))
            continue
        split.examples.append(Example(ids, labels, source))
    for reject in split.rejects:
        log.warning("rejected %s: %s", reject.source, reject.reason)
    return split


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; padding gets attention 0 and label -100."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
