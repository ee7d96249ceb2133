"""The n-gram baselines: counts equal a brute-force count of every scored target with its context (PAD
before a window's start), counting block by block gives the same tables as one pass, and each context's
probabilities form a distribution over the vocabulary."""

from collections import Counter

import numpy as np
import pytest

from distillery_assets.thyme.dataset import Split, cover_windows
from distillery_assets.thyme.evaluate import NGram
from distillery_assets.thyme.tokenizer import PAD_ID

V = 12


def _split(seed: int = 0, chunks: int = 9) -> Split:
    rng = np.random.default_rng(seed)
    tokens, cover, offset = [], [], 0
    for _ in range(chunks):
        chunk = np.concatenate([[2], rng.integers(4, V, size=int(rng.integers(5, 40)))])
        tokens.append(chunk)
        cover += [(offset + s, offset + e, offset + f) for s, e, f in cover_windows(len(chunk), 16, 8)]
        offset += len(chunk)
    flat = np.concatenate(tokens).astype(np.int32)
    cover = np.asarray(cover, dtype=np.int64)
    return Split("train", flat, cover[:, :2].copy(), cover, text_bytes=4 * len(flat), chunks=chunks)


def _brute(split: Split, order: int) -> dict[int, Counter]:
    counts = {k: Counter() for k in range(order)}
    for start, end, first in split.cover:
        for pos in range(first, end):
            ctx = tuple(int(split.tokens[pos - j]) if pos - j >= start else PAD_ID for j in range(1, order))
            for k in range(order):
                counts[k][(ctx[:k], int(split.tokens[pos]))] += 1
    return counts


def _table(model: NGram, k: int) -> Counter:
    keys, counts = model.tables[k - 1][:2]
    out = Counter()
    for key, c in zip(keys.tolist(), counts.tolist()):
        w, h = key % V, key // V
        ctx = tuple((h // V ** (k - 1 - j)) % V for j in range(k))  # most significant digit: the nearest token
        out[(ctx, w)] = c
    return out


def test_counts_match_a_brute_force_count():
    split = _split()
    model = NGram(split, V, order=3)
    brute = _brute(split, 3)
    assert sum(brute[0].values()) == split.scored_tokens
    unigram = np.bincount([w for (_, w), c in brute[0].items() for _ in range(c)], minlength=V)
    assert np.allclose(model.unigram, (unigram + 1) / (unigram.sum() + V))
    for k in (1, 2):
        assert _table(model, k) == brute[k]


def test_block_counting_equals_one_pass():
    split = _split(seed=3, chunks=30)
    whole = NGram(split, V, order=3)
    for block in (1, 7, 50):
        parts = NGram(split, V, order=3, block_tokens=block)
        assert np.array_equal(parts.unigram, whole.unigram)
        for a, b in zip(parts.tables, whole.tables):
            for x, y in zip(a, b):
                assert np.array_equal(x, y)


def test_each_context_is_a_distribution():
    split = _split(seed=5)
    model = NGram(split, V, order=3)
    w = np.arange(V)
    seen = (int(split.tokens[split.cover[0, 0] + 2]), int(split.tokens[split.cover[0, 0] + 1]))
    for ctx in (seen, (PAD_ID, PAD_ID), (11, 11)):
        p = model.prob(w, [np.full(V, ctx[0]), np.full(V, ctx[1])])
        assert p.min() > 0 and p.sum() == pytest.approx(1.0, abs=1e-9)


def test_keys_that_overflow_are_refused():
    with pytest.raises(ValueError, match="does not fit in int64"):
        NGram(_split(), 32_000, order=5)
