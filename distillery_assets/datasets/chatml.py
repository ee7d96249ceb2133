"""ChatML datasets: one example shape, one identity, one split rule, one leakage test, one validation, one writer.

The poetry datasets (educator, poet) and the theme splits go through this module; the filters pipeline is
meant to as well. Nothing here imports Dagster.

**Example.** ``{"messages": [{"role": "system", "content": ...}, {"role": "user", ...},
{"role": "assistant", ...}], "metadata": {...}}``; ``metadata`` is optional (:func:`example`, :func:`to_examples`).

**Identity.** :func:`content_key` is the sha256 of the messages (role and content of every turn, as JSON with
sorted keys). Two examples with the same key are duplicates (:func:`dedupe` keeps the first) and, when one
sits in each split, a leak (:func:`leaked`). A caller may name another key for leakage (a source chunk id,
say) with ``key=``.

**Split rule** (:func:`split`). Shuffle a copy with ``random.Random(seed)``; the last
``ceil(n * valid_fraction)`` examples (exact arithmetic on the fraction, so 30 x 0.1 is 3, not 4) are
validation and the rest, in shuffled order, is train. With two or more examples each side keeps at least
one. Fewer than two raise :class:`DatasetTooSmall`, unless ``allow_empty_side`` (then a single example goes
to validation and train is empty; the split check then fails on the empty side). ``max_samples > 0`` caps
train at that many and validation at ``max(1, max_samples // 5)``. With ``stratify_key`` the same rule is
applied inside each stratum (strata in sorted key order, one random stream) and both sides are shuffled
again, so every stratum is represented in proportion.

This is the count both earlier rules gave wherever their tests look: the theme rule (train
``int(n * 0.9)``, so validation ``n - int(0.9 n)``, which is ``ceil(0.1 n)``) for every n, and the poetry
rule (validation ``round(n * 0.1)``, at least one) at 2, 30 and 39 examples; the two differed at
counts such as 25 (round gives 2, this rule 3).

**Validation** (:func:`check_examples`, :func:`check_split_file`). Turns are exactly system, user,
assistant in that order, each with non-empty string content; optional required metadata fields; no
duplicates; token lengths against ``max_seq``: each turn counts its content's tokens plus
:data:`TURN_OVERHEAD` for the chat template. ``max_seq`` is the training profile's own, read from
``data/config/training/<role>.yaml`` by :func:`max_seq_for`; a split passes while at most
``max_over_length_fraction`` of its examples are longer (training truncates those).

**Files** (:func:`build_split`). Both split files are written atomically, plus a small JSON of split
metadata: rule, seed, fraction, counts, and the sha256 of each file.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import re
import sys
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from distillery_assets.io.hashing import sha256_file, sha256_text

ROLES = ("system", "user", "assistant")
TURN_OVERHEAD = 4  # tokens the ChatML template adds around each turn (<|im_start|>role\n ... <|im_end|>\n)
MAX_OVER_LENGTH_FRACTION = 0.2
SPLIT_RULE = ("random.Random(seed).shuffle, then the last ceil(n * valid_fraction) are valid "
              "(at least 1 each side when n >= 2)")
EMBEDDED_TOKENIZER = "SmolLM2-135M-Instruct (embedded GGUF vocabulary)"


class DatasetTooSmall(ValueError):
    """Too few examples for a split with one example on each side."""


# ---- examples ------------------------------------------------------------------------------------------

def example(system: str, user: str, assistant: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ChatML example (``metadata`` only when given)."""
    ex: dict[str, Any] = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                                       {"role": "assistant", "content": assistant}]}
    if metadata is not None:
        ex["metadata"] = metadata
    return ex


def to_examples(records: Iterable[dict], turns: Callable[[dict], tuple[str, str]], system: str,
                metadata: Callable[[dict], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Map records to examples: ``turns(record) -> (user, assistant)``; a record with an empty turn is skipped."""
    out = []
    for rec in records:
        user, assistant = turns(rec)
        if user.strip() and assistant.strip():  # never an empty turn
            out.append(example(system, user, assistant, metadata(rec) if metadata else None))
    return out


def content_key(ex: dict[str, Any]) -> str:
    """The example's identity: sha256 of its messages (every turn's role and content)."""
    return sha256_text(json.dumps(ex["messages"], sort_keys=True))


def dedupe(examples: Sequence[dict]) -> tuple[list[dict], int]:
    """Drop examples whose :func:`content_key` was already seen; return the kept ones and how many went."""
    seen: set[str] = set()
    kept = []
    for ex in examples:
        key = content_key(ex)
        if key not in seen:
            seen.add(key)
            kept.append(ex)
    return kept, len(examples) - len(kept)


# ---- the split rule ------------------------------------------------------------------------------------

def _exact(valid_fraction: float) -> Fraction:
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid fraction must be between 0 and 1, exclusive (train ratio {1 - valid_fraction:g}); "
                         f"got {valid_fraction}")
    return Fraction(valid_fraction).limit_denominator(10**6)  # 0.1 and 1 - 0.9 are both exactly 1/10


def valid_count(n: int, valid_fraction: float) -> int:
    """How many of ``n`` examples the rule sends to validation."""
    frac = _exact(valid_fraction)
    count = math.ceil(n * frac)
    return min(max(count, 1), n - 1) if n >= 2 else count


def _cut(items: list, valid_fraction: float, rng: random.Random) -> tuple[list, list]:
    rng.shuffle(items)
    n_train = len(items) - valid_count(len(items), valid_fraction)
    return items[:n_train], items[n_train:]


def split(examples: Sequence[dict], *, seed: int = 42, valid_fraction: float = 0.1, max_samples: int = 0,
          allow_empty_side: bool = False,
          stratify_key: Callable[[dict], Hashable] | None = None) -> tuple[list[dict], list[dict]]:
    """The one train/valid split rule (see the module docstring). Returns ``(train, valid)``."""
    rng = random.Random(seed)
    if stratify_key is None:
        train, valid = _cut(list(examples), valid_fraction, rng)
    else:
        _exact(valid_fraction)
        strata: dict[Hashable, list] = {}
        for ex in examples:
            strata.setdefault(stratify_key(ex), []).append(ex)
        train, valid = [], []
        for key in sorted(strata, key=repr):
            t, v = _cut(strata[key], valid_fraction, rng)
            train += t
            valid += v
        rng.shuffle(train)
        rng.shuffle(valid)
    if not allow_empty_side and (not train or not valid):
        n = len(examples)
        if n < 2:
            raise DatasetTooSmall(f"need at least 2 examples to split train/valid, have {n}")
        raise DatasetTooSmall(f"{n} examples gave {len(train)} train and {len(valid)} valid (a stratum of one "
                              "example goes to valid); each side needs at least one")
    if max_samples > 0:
        train = train[:max_samples]
        valid = valid[: max(1, min(len(valid), max_samples // 5))]
    return train, valid


def leaked(train: Sequence[dict], valid: Sequence[dict],
           key: Callable[[dict], Hashable] = content_key) -> set[Hashable]:
    """Keys found on both sides of a split (leakage); by default the example's :func:`content_key`."""
    return {key(e) for e in train} & {key(e) for e in valid}


# ---- validation ----------------------------------------------------------------------------------------

@dataclass
class DatasetReport:
    examples: int = 0
    problems: list[str] = field(default_factory=list)  # "<where> line N: ..." for shape, role, empty-turn errors
    duplicates: int = 0
    over_length: int = 0
    max_tokens: int = 0
    mean_tokens: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.duplicates == 0


def check_examples(examples: Sequence[dict], *, max_seq: int | None = None,
                   count_tokens: Callable[[str], int] | None = None, where: str = "dataset",
                   required_metadata: Sequence[str] = ()) -> DatasetReport:
    """Shape and roles in order, no empty turns, required metadata, no duplicates, token lengths vs ``max_seq``.

    ``count_tokens`` counts one turn's content (the base model's tokenizer); without it (or without
    ``max_seq``) lengths are not measured.
    """
    rep = DatasetReport(examples=len(examples))
    seen: set[str] = set()
    lengths = []
    for i, ex in enumerate(examples, start=1):
        meta = ex.get("metadata") if isinstance(ex, dict) else None
        for name in required_metadata:
            if not isinstance(meta, dict) or not meta.get(name):
                rep.problems.append(f"{where} line {i}: metadata.{name} missing")
        msgs = ex.get("messages") if isinstance(ex, dict) else None
        if not isinstance(msgs, list) or len(msgs) != len(ROLES):
            rep.problems.append(f"{where} line {i}: 'messages' must be a list of {len(ROLES)} turns")
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
        key = content_key(ex)
        rep.duplicates += key in seen
        seen.add(key)
        if count_tokens and max_seq:
            n = sum(count_tokens(m["content"]) + TURN_OVERHEAD for m in msgs)
            lengths.append(n)
            rep.over_length += n > max_seq
    if lengths:
        rep.max_tokens, rep.mean_tokens = max(lengths), round(sum(lengths) / len(lengths), 1)
    return rep


@dataclass
class SplitCheck:
    """One split file's verdict: its own report plus leakage into its sibling split."""

    report: DatasetReport
    max_seq: int
    leaked: int = 0
    sibling_compared: bool = False
    max_over_length_fraction: float = MAX_OVER_LENGTH_FRACTION

    @property
    def over_length_fraction(self) -> float:
        return self.report.over_length / self.report.examples if self.report.examples else 0.0

    @property
    def passed(self) -> bool:
        return (self.report.ok and self.report.examples > 0 and self.leaked == 0
                and self.over_length_fraction <= self.max_over_length_fraction)

    def summary(self) -> dict[str, Any]:
        rep = self.report
        return {"examples": rep.examples, "problems": rep.problems[:20], "duplicates": rep.duplicates,
                "leaked_into_other_split": self.leaked, "sibling_compared": self.sibling_compared,
                "max_seq": self.max_seq, "over_max_seq": rep.over_length,
                "over_max_seq_fraction": round(self.over_length_fraction, 4),
                "max_tokens": rep.max_tokens, "mean_tokens": rep.mean_tokens}


def check_split_file(path: Path, sibling: Path | None = None, *, max_seq: int,
                     count_tokens: Callable[[str], int] | None = None,
                     max_over_length_fraction: float = MAX_OVER_LENGTH_FRACTION,
                     required_metadata: Sequence[str] = ()) -> SplitCheck:
    """Check one split file; compare it with ``sibling`` (the other side) when that file exists."""
    path = Path(path)
    examples = read_jsonl(path)
    rep = check_examples(examples, max_seq=max_seq, count_tokens=count_tokens, where=path.name,
                         required_metadata=required_metadata)
    compared = sibling is not None and Path(sibling).exists()
    leaks = len(leaked(examples, read_jsonl(Path(sibling)))) if compared else 0
    return SplitCheck(rep, max_seq, leaks, compared, max_over_length_fraction)


# ---- files ---------------------------------------------------------------------------------------------

@dataclass
class SplitResult:
    train: list[dict]
    valid: list[dict]
    train_path: Path
    valid_path: Path
    meta_path: Path
    duplicates_removed: int
    info: dict[str, Any]


def build_split(examples: Sequence[dict], *, train_path: Path, valid_path: Path, meta_path: Path, seed: int = 42,
                valid_fraction: float = 0.1, max_samples: int = 0, allow_empty_side: bool = False,
                stratify_key: Callable[[dict], Hashable] | None = None) -> SplitResult:
    """Dedupe, split by the one rule, write both files atomically and the split metadata JSON beside them."""
    kept, removed = dedupe(examples)
    train, valid = split(kept, seed=seed, valid_fraction=valid_fraction, max_samples=max_samples,
                         allow_empty_side=allow_empty_side, stratify_key=stratify_key)
    atomic_write_jsonl(Path(train_path), train)
    atomic_write_jsonl(Path(valid_path), valid)
    info = {
        "rule": SPLIT_RULE, "seed": seed, "valid_fraction": valid_fraction, "max_samples": max_samples,
        "stratified": stratify_key is not None,
        "counts": {"input": len(examples), "duplicates_removed": removed, "train": len(train), "valid": len(valid)},
        "files": {side: {"path": Path(p).name, "sha256": sha256_file(p)}
                  for side, p in (("train", train_path), ("valid", valid_path))},
    }
    atomic_write_text(Path(meta_path), json.dumps(info, indent=2) + "\n")
    return SplitResult(train, valid, Path(train_path), Path(valid_path), Path(meta_path), removed, info)


# ---- max_seq and token counting ------------------------------------------------------------------------

def max_seq_for(role: str, profile: str | None = None) -> int:
    """The ``max_seq`` of the training profile that trains ``role`` (``data/config/training/<role>.yaml``)."""
    from distillery_assets.paths import config_dir
    from distillery_assets.training.config import load_train_config

    return load_train_config(config_dir() / "training" / f"{role}.yaml", profile).max_seq


# llama.cpp builds a context even for a vocabulary-only load, whose hyperparameters are never read, and then
# warns on stderr "n_ctx_seq (512) > n_ctx_train (0) -- possible training context overflow" (verbose=False does
# not silence it). Nothing is trained or run in that context, so this one line is dropped.
_VOCAB_ONLY_CONTEXT_WARNING = re.compile(r"n_ctx_seq \(\d+\) > n_ctx_train \(0\)")


def gguf_token_counter(gguf_path: str | Path) -> Callable[[str], int]:
    """Count tokens with a GGUF file's tokenizer (vocabulary only; no weights are loaded)."""
    from llama_cpp import Llama

    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # llama-cpp-python prints llama.cpp's log to sys.stderr
            llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    finally:
        sys.stderr.write("".join(line for line in printed.getvalue().splitlines(keepends=True)
                                 if not _VOCAB_ONLY_CONTEXT_WARNING.search(line)))

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count


def embedded_token_counter() -> Callable[[str], int]:
    """Token counter of the bundled SmolLM2 GGUF (:data:`EMBEDDED_TOKENIZER`)."""
    from distillery_assets.embedded import smollm2_gguf_path

    return gguf_token_counter(str(smollm2_gguf_path()))
