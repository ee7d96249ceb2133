"""Teaching records -> ChatML training examples, the seeded train/valid split, and dataset checks.

An example is ``{"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}``.
The educator's system turn is the condensed persona; the poet's is ``poet_system.txt``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


def _fenced(text: str) -> str:
    return f"---\n{text}\n---"


def user_assistant(task: str, rec: dict) -> tuple[str, str]:
    """The (user, assistant) turn pair for one gated record of ``task``."""
    if task == "critique":
        return rec["poem"]["text"], rec["critique"]
    if task == "brief":
        return rec["user_request"], rec["brief"]
    if task == "lesson":
        return rec["question"], rec["lesson"]
    if task == "autopsy":
        return rec["poem"]["text"], rec["autopsy"]
    if task == "comparison":
        return f"Poem A:\n{_fenced(rec['poem_a']['text'])}\n\nPoem B:\n{_fenced(rec['poem_b']['text'])}", rec["comparison"]
    if task == "dialogue":
        user = (f"Original poem:\n{_fenced(rec['poem']['text'])}\n\nYour critique:\n{_fenced(rec['critique'])}"
                f"\n\nTheir revision:\n{_fenced(rec['revision'])}")
        return user, rec["follow_up"]
    if task == "poet_pair":
        return rec["brief"], rec["poem"]
    raise KeyError(f"unknown poetry task {task!r}")


def to_examples(task: str, records: Iterable[dict], system: str) -> list[dict]:
    out = []
    for rec in records:
        user, assistant = user_assistant(task, rec)
        if user.strip() and assistant.strip():  # never an empty turn
            out.append({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                                     {"role": "assistant", "content": assistant}]})
    return out


def _digest(example: dict) -> str:
    return hashlib.sha256(json.dumps(example["messages"], sort_keys=True).encode()).hexdigest()


def dedupe(examples: Sequence[dict]) -> tuple[list[dict], int]:
    seen, kept = set(), []
    for ex in examples:
        d = _digest(ex)
        if d not in seen:
            seen.add(d)
            kept.append(ex)
    return kept, len(examples) - len(kept)


class DatasetTooSmall(ValueError):
    pass


def split(examples: Sequence[dict], *, seed: int = 42, valid_fraction: float = 0.1,
          max_samples: int = 0) -> tuple[list[dict], list[dict]]:
    """Shuffle with ``seed``; the last ``max(1, round(n * valid_fraction))`` are validation.

    ``max_samples > 0`` caps train to that many and valid to ``max(1, min(len, max_samples // 5))``.
    Needs at least two examples (one each side).
    """
    if len(examples) < 2:
        raise DatasetTooSmall(f"need at least 2 examples to split train/valid, have {len(examples)}")
    items = list(examples)
    random.Random(seed).shuffle(items)
    n_val = min(len(items) - 1, max(1, round(len(items) * valid_fraction)))
    train, valid = items[:-n_val], items[-n_val:]
    if max_samples > 0:
        train = train[:max_samples]
        valid = valid[: max(1, min(len(valid), max_samples // 5))]
    return train, valid


@dataclass
class DatasetReport:
    examples: int = 0
    problems: list[str] = field(default_factory=list)  # schema/role/empty-turn errors, "line N: ..."
    duplicates: int = 0
    over_length: int = 0
    max_tokens: int = 0
    mean_tokens: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.duplicates == 0


def check_examples(examples: Sequence[dict], *, max_seq: int, count_tokens: Callable[[str], int] | None = None,
                   where: str = "dataset") -> DatasetReport:
    """Schema, roles in order, no empty turns, no duplicates, token lengths against ``max_seq``.

    ``count_tokens`` counts one message's tokens (the base model's tokenizer); each message adds
    4 tokens of chat-template overhead. Without it, token lengths are not checked.
    """
    rep = DatasetReport(examples=len(examples))
    seen: set[str] = set()
    lengths = []
    for i, ex in enumerate(examples, start=1):
        msgs = ex.get("messages") if isinstance(ex, dict) else None
        if not isinstance(msgs, list) or len(msgs) != 3:
            rep.problems.append(f"{where} line {i}: 'messages' must be a list of 3 turns")
            continue
        bad = False
        for j, (msg, role) in enumerate(zip(msgs, ROLES)):
            if not isinstance(msg, dict) or msg.get("role") != role:
                rep.problems.append(f"{where} line {i}: turn {j} must have role {role!r}")
                bad = True
            elif not isinstance(msg.get("content"), str) or not msg["content"].strip():
                rep.problems.append(f"{where} line {i}: {role} turn is empty")
                bad = True
        if bad:
            continue
        d = _digest(ex)
        if d in seen:
            rep.duplicates += 1
        seen.add(d)
        if count_tokens:
            n = sum(count_tokens(m["content"]) + 4 for m in msgs)
            lengths.append(n)
            rep.over_length += n > max_seq
    if lengths:
        rep.max_tokens, rep.mean_tokens = max(lengths), round(sum(lengths) / len(lengths), 1)
    return rep


def overlap(train: Sequence[dict], valid: Sequence[dict]) -> int:
    """Examples present in both splits (leakage)."""
    return len({_digest(e) for e in train} & {_digest(e) for e in valid})
