"""Perplexity of Thyme models and of two baselines, on the same split and tokenizer.

Three numbers per model:

* ``seed_ppl``: the seed's metric exactly: the validation samples (``Split.windows``) in order, batches
  of ``batch_size``, each batch's mean cross-entropy over its non-PAD targets, ``exp`` of the mean of
  those batch means (the 57.1 the seed reported is this, on its best epoch).
* ``ppl``: token-weighted: every validation token scored once (``Split.cover``), ``exp(sum nll / count)``.
* ``bpb``: bits per byte: the same summed NLL in bits over the UTF-8 bytes of the validation chunks,
  comparable across vocabularies and architectures (with the Whitespace pre-tokenizer the tokens do
  not carry the text's exact whitespace, so it is slightly optimistic for every model alike).

Baselines: a unigram model (add-one smoothing) and an interpolated absolute-discounting n-gram model
(order 3, discount 0.75, backing off to the unigram), counted on the training split's tokens.
Both score exactly the targets the neural models score (context before a window's start is PAD).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from distillery_assets.thyme.dataset import Split
from distillery_assets.thyme.tokenizer import PAD_ID

LN2 = math.log(2)


@dataclass
class EvalRow:
    model: str
    seed_ppl: float
    ppl: float
    bpb: float
    scored_tokens: int
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ window NLL

WindowScorer = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Windows of token ids -> per-target NLL (nats) of each, targets = window[1:]."""


def neural_scorer(model, device: str = "cpu") -> WindowScorer:
    import torch
    import torch.nn.functional as F

    def score(windows: list[np.ndarray]) -> list[np.ndarray]:
        width = max(len(w) for w in windows)
        ids = torch.full((len(windows), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, w in enumerate(windows):
            ids[row, : len(w)] = torch.from_numpy(w)
            mask[row, : len(w)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
        nll = nll.view(len(windows), width - 1).cpu().numpy()
        return [nll[row, : len(w) - 1].astype(np.float64) for row, w in enumerate(windows)]

    return score


def _windows(split: Split, rows: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(split.tokens[s:e], dtype=np.int64) for s, e in rows[:, :2]]


def seed_metric(scorer: WindowScorer, split: Split, *, batch_size: int) -> float:
    """The seed's validation perplexity alone: ``exp`` of the mean of per-batch mean cross-entropy over the
    split's samples in order (what the training loop records per epoch as ``seed_ppl``)."""
    if len(split.windows) == 0:
        raise ValueError(f"{split.name} split has no windows to score")
    means = [np.concatenate(scorer(_windows(split, split.windows[k : k + batch_size]))).mean()
             for k in range(0, len(split.windows), batch_size)]
    return float(math.exp(np.mean(means)))


def evaluate(name: str, scorer: WindowScorer, split: Split, *, batch_size: int) -> EvalRow:
    """The three metrics of one model on ``split`` (see the module docstring)."""
    if len(split.windows) == 0 or len(split.cover) == 0:
        raise ValueError(f"{split.name} split has no windows to score")
    batch_means = []
    for k in range(0, len(split.windows), batch_size):
        nll = np.concatenate(scorer(_windows(split, split.windows[k : k + batch_size])))
        batch_means.append(nll.mean())
    total, count = 0.0, 0
    for k in range(0, len(split.cover), batch_size):
        rows = split.cover[k : k + batch_size]
        for (start, _end, score_from), nll in zip(rows, scorer(_windows(split, rows))):
            kept = nll[score_from - start - 1:]  # target j sits at position start + 1 + j
            total += float(kept.sum())
            count += len(kept)
    return EvalRow(name, float(math.exp(np.mean(batch_means))), math.exp(total / count),
                   total / LN2 / max(split.text_bytes, 1), count, len(split.windows))


# ------------------------------------------------------------------------------------------- baselines

def _contexts(tokens: np.ndarray, rows: np.ndarray, order: int, offset: int = 0):
    """Scored targets of ``rows`` and their ``order - 1`` preceding tokens (PAD before a window's start).
    ``tokens`` holds the split's tokens from position ``offset`` on."""
    targets, ctx = [], [[] for _ in range(order - 1)]
    for row in rows:
        start, end, first = int(row[0]) - offset, int(row[1]) - offset, int(row[2]) - offset
        pos = np.arange(first, end)
        targets.append(tokens[first:end])
        for k in range(1, order):
            back = pos - k
            ok = back >= start
            ctx[k - 1].append(np.where(ok, tokens[np.where(ok, back, 0)], PAD_ID))
    return np.concatenate(targets), [np.concatenate(c) for c in ctx]


def _blocks(split: Split, block_tokens: int):
    """The covering windows in runs of about ``block_tokens`` tokens, each with its slice of the (memory-mapped)
    token array read once: counting holds one block and the counts, never the whole split."""
    rows = split.cover
    k = 0
    while k < len(rows):
        j = k + 1
        while j < len(rows) and rows[j, 1] - rows[k, 0] <= block_tokens:
            j += 1
        lo, hi = int(rows[k:j, 0].min()), int(rows[k:j, 1].max())
        yield np.asarray(split.tokens[lo:hi], dtype=np.int64), rows[k:j], lo
        k = j


def _merge(keys: np.ndarray, counts: np.ndarray, new_keys: np.ndarray, new_counts: np.ndarray):
    merged, inverse = np.unique(np.concatenate([keys, new_keys]), return_inverse=True)
    return merged, np.bincount(inverse, weights=np.concatenate([counts, new_counts])).astype(np.int64)


class NGram:
    """Interpolated absolute discounting, orders 1..``order`` (order 1: add-one unigram).

    Counted block by block over the training split's covering windows (every scored token once), so memory
    grows with the number of distinct n-grams, not with the split."""

    def __init__(self, train: Split, vocab_size: int, order: int = 3, discount: float = 0.75,
                 block_tokens: int = 1 << 22):
        if vocab_size ** order >= 2 ** 63:
            raise ValueError(f"a {order}-gram key over {vocab_size:,} token ids does not fit in int64")
        self.V, self.order, self.D = vocab_size, order, discount
        unigram = np.zeros(vocab_size, dtype=np.int64)
        counted = [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in range(1, order)]
        for tokens, rows, offset in _blocks(train, block_tokens):
            w, ctx = _contexts(tokens, rows, order, offset)
            unigram += np.bincount(w, minlength=vocab_size)
            for k in range(1, order):  # k = context length
                h = np.zeros_like(w)
                for j in range(k):
                    h = h * vocab_size + ctx[j]
                new_keys, new_counts = np.unique(h * vocab_size + w, return_counts=True)
                counted[k - 1] = _merge(*counted[k - 1], new_keys, new_counts)
        self.unigram = (unigram + 1.0) / (unigram.sum() + vocab_size)
        self.tables = []
        for keys, counts in counted:
            hist, inverse = np.unique(keys // vocab_size, return_inverse=True)
            self.tables.append((keys, counts, hist, np.bincount(inverse, weights=counts),
                                np.bincount(inverse).astype(np.float64)))

    def prob(self, w: np.ndarray, ctx: list[np.ndarray]) -> np.ndarray:
        p = self.unigram[w]
        for k, (keys, counts, hist, hist_total, hist_types) in enumerate(self.tables, start=1):
            h = np.zeros_like(w)
            for j in range(k):
                h = h * self.V + ctx[j]
            hi = np.clip(np.searchsorted(hist, h), 0, len(hist) - 1)
            seen = hist[hi] == h
            key = h * self.V + w
            ki = np.clip(np.searchsorted(keys, key), 0, len(keys) - 1)
            c = np.where(keys[ki] == key, counts[ki], 0).astype(np.float64)
            total = np.where(seen, hist_total[hi], 1.0)
            interp = (np.maximum(c - self.D, 0) + self.D * hist_types[hi] * p) / total
            p = np.where(seen, interp, p)
        return p

    def scorer(self) -> WindowScorer:
        def score(windows: list[np.ndarray]) -> list[np.ndarray]:
            out = []
            for win in windows:
                pos = np.arange(1, len(win))
                ctx = [np.where(pos - k >= 0, win[np.maximum(pos - k, 0)], PAD_ID) for k in range(1, self.order)]
                out.append(-np.log(self.prob(win[1:], ctx)))
            return out

        return score


def baseline_rows(train: Split, val: Split, vocab_size: int, *, batch_size: int, order: int = 3) -> list[EvalRow]:
    unigram = NGram(train, vocab_size, order=1)
    ngram = NGram(train, vocab_size, order=order)
    return [evaluate("unigram", unigram.scorer(), val, batch_size=batch_size),
            evaluate(f"{order}-gram", ngram.scorer(), val, batch_size=batch_size)]
