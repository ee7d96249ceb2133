"""Perplexity of a torch model and of a GGUF file on the same tokens: the validation split and a held-out text.

Both sides score the *same token ids* (from the Hugging Face tokenizer) at the same positions, so the two
numbers are directly comparable: the gap is what conversion + quantization cost.

Two kinds of evaluation set:

* the validation split: ChatML conversations, scored on the assistant tokens only (as in training);
* a held-out text (``read_heldout``): plain text that no training example contains, cut into windows of
  ``window`` tokens (``text_examples``), every token after a window's first one scored. A few thousand tokens
  of it keep the figure from resting on a handful of validation replies.

``Score`` keeps the summed NLL and the token count, so sets combine token-weighted (``combined``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from distillery_assets.io.hashing import sha256_text
from distillery_assets.training.chat_data import IGNORE, Example

MIN_WINDOW_TOKENS = 16
"""A held-out text's last window is kept only with at least this many tokens."""


class HeldoutText(BaseModel):
    """A fixed text scored beside the validation split; travels inside the export spec (so Modal has it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    """Where it came from, e.g. ``training/heldout/poetry_teaching.txt`` (relative to the config folder)."""
    text: str

    @property
    def digest(self) -> str:
        return sha256_text(self.text)


def read_heldout(path: Path, name: str | None = None) -> HeldoutText:
    """The text of ``path`` without its leading ``#`` comment lines; an empty or missing file is an error."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: held-out text not found (export.heldout_text)") from exc
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    text = "\n".join(lines).strip()
    if not text:
        raise ValueError(f"{path}: held-out text is empty (export.heldout_text)")
    return HeldoutText(name=name or path.name, text=text)


def text_examples(tokenizer: Any, text: str, *, window: int, source: str) -> list[Example]:
    """``text`` as consecutive windows of ``window`` tokens, every token a label (the first has no context)."""
    if window <= 1:
        raise ValueError(f"window must be more than 1 token, not {window}")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    out = []
    for n, start in enumerate(range(0, len(ids), window), 1):
        chunk = ids[start:start + window]
        if len(chunk) < MIN_WINDOW_TOKENS and out:
            break
        out.append(Example(input_ids=chunk, labels=list(chunk), source=f"{source}#{n}"))
    return out


def scored_tokens(examples: Sequence[Example]) -> int:
    """How many tokens a perplexity over ``examples`` scores (a label after the first position)."""
    return sum(1 for e in examples for label in e.labels[1:] if label != IGNORE)


@dataclass(frozen=True)
class Score:
    """Summed next-token NLL over ``tokens`` scored tokens."""

    nll: float
    tokens: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.tokens)


def combined(scores: Sequence[Score]) -> Score:
    """Several sets as one (token-weighted)."""
    return Score(sum(s.nll for s in scores), sum(s.tokens for s in scores))


def torch_score(model: Any, examples: list[Example], *, pad_id: int, device: str = "cpu",
                batch_size: int = 4) -> Score:
    from distillery_assets.training.loop import evaluate_loss

    mean = evaluate_loss(model, examples, batch_size=batch_size, pad_id=pad_id, device=device)
    n = scored_tokens(examples)
    return Score(mean * n, n)


def gguf_scores(gguf_file: Path, sets: Sequence[list[Example]], *, threads: int | None = None) -> list[Score]:
    """Load ``gguf_file`` once in llama.cpp (``logits_all``) and score each set's label tokens (``threads``
    None: the thread policy's, ``distillery_assets.threads``; scoring is prompt work, its batch threads)."""
    import numpy as np
    from llama_cpp import Llama

    from distillery_assets.threads import llama_threads

    longest = max(len(e.input_ids) for examples in sets for e in examples)
    llm = Llama(model_path=str(gguf_file), n_ctx=longest + 8, n_batch=longest + 8, n_ubatch=longest + 8,
                logits_all=True, **llama_threads(threads), verbose=False)
    scores = []
    try:
        for examples in sets:
            total, count = 0.0, 0
            for example in examples:
                llm.reset()
                llm.eval(example.input_ids)
                # position t predicts label t + 1; only the scored rows are read, in llama.cpp's float32, the
                # sums in float64: the NLL of a float64 copy of every row to ~1e-9, at a tenth of its CPU
                # (issue 26: 0.35 instead of 3.8 CPU s over the 2,955 held-out tokens)
                targets = np.asarray(example.labels[1:], dtype=np.int64)
                keep = np.flatnonzero(targets != IGNORE)
                if keep.size == 0:
                    continue
                logits = llm.scores[: len(example.input_ids) - 1][keep]
                peak = logits.max(axis=1)
                log_norm = peak.astype(np.float64) + np.log(
                    np.exp(logits - peak[:, None]).sum(axis=1, dtype=np.float64))
                total += float((log_norm - logits[np.arange(keep.size), targets[keep]]).sum())
                count += int(keep.size)
            if count == 0:
                raise ValueError("no tokens to score")
            scores.append(Score(total, count))
    finally:
        llm.close()
    return scores


def torch_perplexity(model: Any, examples: list[Example], *, pad_id: int, device: str = "cpu",
                     batch_size: int = 4) -> float:
    return torch_score(model, examples, pad_id=pad_id, device=device, batch_size=batch_size).ppl


def gguf_perplexity(gguf_file: Path, examples: list[Example], *, threads: int | None = None) -> float:
    """Run each example through llama.cpp with ``logits_all`` and score the label tokens."""
    return gguf_scores(gguf_file, [examples], threads=threads)[0].ppl
