"""Deterministic answers for the fake servers: text derived from the prompt, JSON that fits a schema,
and the shared fault script (what the next request should suffer)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

Reply = Callable[[list[dict[str, Any]], dict[str, Any]], str]
BatchFaults = Callable[[dict[str, Any], int], "str | None"]  # (batch line, n-th submission) -> outcome or None
_WORDS = ("amber river lantern quiet orchard copper meadow signal harbor velvet ember summit willow "
          "cobalt thistle marble canyon falcon saffron tide").split()
FAULTS = {"ok", "429", "500", "timeout", "malformed", "length", "garbage", "finish"}


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def default_reply(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """A sentence whose words are picked by the prompt's hash: the same prompt always gets the same text."""
    prompt = "\n".join(f"{m.get('role')}:{m.get('content')}" for m in messages)
    digest = _digest(prompt)
    words = [_WORDS[b % len(_WORDS)] for b in digest[:12]]
    return f"Answer {digest.hex()[:8]}: " + " ".join(words) + "."


def schema_example(schema: dict[str, Any], seed: str = "") -> Any:
    """A small value that validates against common JSON Schemas (object/array/string/number/enum/const)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema and schema[key]:
            return schema_example(schema[key][0], seed)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: schema_example(sub, seed + name) for name, sub in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [schema_example(schema.get("items", {"type": "string"}), f"{seed}{i}") for i in range(count)]
    if kind == "string":
        text = " ".join(_WORDS[b % len(_WORDS)] for b in _digest(seed)[:3])
        min_len = int(schema.get("minLength", 0))
        return (text + " " + text * (min_len // max(len(text), 1) + 1))[: max(min_len, len(text))] if min_len > len(text) else text
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 0.5))
    if kind == "boolean":
        return True
    return None


def schema_from_prompt(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A schema quoted in the prompt after "JSON Schema:" (how callers without a JSON mode ask for one)."""
    for message in messages:
        content = str(message.get("content") or "")
        at = content.find("JSON Schema:")
        if at >= 0:
            start = content.find("{", at)
            try:
                value, _ = json.JSONDecoder().raw_decode(content[start:])
                return value if isinstance(value, dict) else None
            except ValueError:
                return None
    return None


def json_reply(schema: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    seed = json.dumps(messages, sort_keys=True)
    return json.dumps(schema_example(schema, seed))


def approx_tokens(text: str) -> int:
    return max(1, len(text.split()))


def truncate_words(text: str, max_tokens: int) -> str:
    return " ".join(text.split()[:max_tokens])


class Script:
    """Faults injected in order, one per API call: ("429", retry_after), ("500",), ("timeout", seconds),
    ("malformed",) a reply that is not valid JSON, ("length",) a truncated reply, ("garbage",) a body that
    is not JSON at all, ("finish", reason) an answer that ends with that finish reason (each fake in its API's
    own way: see ``unfinished``), ("ok",) a normal answer. After the script runs out every call is answered
    normally."""

    def __init__(self, items: Iterable[Any] | None):
        self._items: list[tuple] = []
        for item in items or []:
            step = (item,) if isinstance(item, str) else tuple(item)
            if not step or str(step[0]) not in FAULTS:
                raise ValueError(f"unknown fault {item!r}; expected one of {sorted(FAULTS)}")
            self._items.append((str(step[0]),) + step[1:])
        self._lock = threading.Lock()

    def next(self) -> tuple | None:
        with self._lock:
            return self._items.pop(0) if self._items else None

    def extend(self, items: Iterable[Any]) -> None:
        more = Script(items)._items
        with self._lock:
            self._items.extend(more)

    def __len__(self) -> int:
        return len(self._items)


MALFORMED = 'Sure! Here is the JSON you asked for: {"result": "unterminated'


def reply_text(kind: str | None, reply: Reply | None, messages: list[dict[str, Any]], body: dict[str, Any],
               schema: dict[str, Any] | None) -> str:
    """What every fake answers: the malformed-JSON fault, else the test's own ``reply``, else an example of
    the requested JSON ``schema``, else the default echo."""
    if kind == "malformed":
        return MALFORMED
    if reply is not None:
        return reply(messages, body)
    if schema is not None:
        return json_reply(schema, messages)
    return default_reply(messages, body)


def unfinished(fault: tuple | None, text: str) -> tuple[str | None, str] | None:
    """For a ("finish", reason) fault: (reason, half of ``text``) -- the answer stops mid-sentence, as one stopped
    by a content filter does; ``reason`` None: the server sends no finish reason. None for any other fault."""
    if not fault or fault[0] != "finish":
        return None
    return (fault[1] if len(fault) > 1 else None), truncate_words(text, max(1, approx_tokens(text) // 2))


def cut_to_budget(kind: str | None, text: str, max_tokens: int) -> tuple[str, bool]:
    """``(text, truncated)``: a "length" fault halves the reply; a reply over ``max_tokens`` is cut to it."""
    if kind == "length" or approx_tokens(text) > max_tokens:
        limit = max(1, approx_tokens(text) // 2) if kind == "length" else max_tokens
        return truncate_words(text, min(limit, max_tokens)), True
    return text, False


def prompt_key(body: dict[str, Any]) -> str:
    """What identifies one prompt across submissions, online or in a batch, for either API: the system turn, the
    messages and the budget (a re-ask or a larger budget is another submission of another prompt)."""
    budget = body.get("max_tokens") or body.get("max_completion_tokens")
    canonical = json.dumps({"system": body.get("system"), "messages": body.get("messages"), "budget": budget},
                           sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fail_first(share: float, outcome: str) -> BatchFaults:
    """Batch faults: about ``share`` of the prompts (picked by their hash, so the same ones every time) answer
    ``outcome`` ("errored", "expired", "canceled") the first time they arrive in a batch, and normally after."""
    def faults(line: dict[str, Any], submission: int) -> str | None:
        body = line.get("params") or line.get("body") or {}
        pick = int(prompt_key(body)[:8], 16) % 1000 < share * 1000
        return outcome if pick and submission == 1 else None
    return faults
