"""Labels with a known signal for the filter-training tests and benchmark: shipped book chunks scored by
the seed's keyword counts per theme group (deep_red_theme's dimensions are theme groups)."""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

import numpy as np

from distillery_assets.paths import repo_root

BOOKS = repo_root() / "data" / "inputs" / "gutenberg"
KEYWORDS = repo_root() / "data" / "config" / "theme" / "theme_keywords.json"
GROUPS = {
    "society": ["collectivism", "utopia", "dystopia", "authority", "power", "revolution", "propaganda"],
    "science_space": ["science", "space", "exploration", "ai_machine"],
    "mind_games": ["chess", "philosophy", "conspiracy"],
}
DIMS = list(GROUPS)
WEIGHTS = [0.5, 0.3, 0.2]
TIERS = [("strong", 6.0), ("usable", 3.0), ("weak", 0.0)]


@cache
def book_chunks() -> tuple[dict, ...]:
    """Every chunk of the shipped Gutenberg sample (theme pipeline's chunker), as chunk records."""
    from distillery_assets.theme import books, chunking

    ids = sorted(int(p.stem[2:]) for p in BOOKS.glob("pg*.txt") if p.stem[2:].isdigit())
    batch = books.from_local_dir(BOOKS, books.BookSelection(categories={"all": ids}))
    return tuple(c for r in batch.records for c in chunking.chunk_book(r))


def sample_chunks(n: int, seed: int = 7) -> list[dict]:
    chunks = list(book_chunks())
    random.Random(seed).shuffle(chunks)
    return chunks[:n]


def keyword_scores(texts: list[str]) -> np.ndarray:
    """(n, 3) scores on 0-10: distinct theme keywords found per group, scaled (1.25 per keyword), capped."""
    from distillery_assets.theme.keywords import KeywordCounter

    sets = json.loads(Path(KEYWORDS).read_text(encoding="utf-8"))
    counts = KeywordCounter(sets).count_many(texts)
    return np.asarray([[min(10.0, 1.25 * sum(c[t] for t in themes)) for themes in GROUPS.values()]
                       for c in counts], dtype=np.float32)


def write_signal_splits(folder: Path, n: int = 300, seed: int = 7) -> dict[str, Path]:
    """train/val/test JSONL (80/10/10) in the seed's record format with keyword-signal labels."""
    chunks = sample_chunks(n, seed)
    labels = keyword_scores([c["text"] for c in chunks])
    folder.mkdir(parents=True, exist_ok=True)
    cut1, cut2 = int(n * 0.8), int(n * 0.9)
    out = {}
    for name, (lo, hi) in {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n)}.items():
        path = folder / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for c, y in zip(chunks[lo:hi], labels[lo:hi], strict=True):
                fh.write(json.dumps({"id": c["chunk_id"], "title": c["source_title"], "content": c["text"],
                                     "url": "", "labels": [float(v) for v in y], "dimension_names": DIMS}) + "\n")
        out[name] = path
    return out


FILLER = ["The morning was grey and the road ran on between the fields.",
          "She folded the letter and set it on the table by the window.",
          "They walked for an hour without saying much to each other.",
          "The house at the end of the lane had stood empty for years.",
          "A dog barked somewhere down the street and then fell quiet.",
          "He counted the coins twice before he put them in his pocket."]


def made_texts(n: int, seed: int = 11) -> list[str]:
    """Short passages the test makes: each mixes filler sentences with 0-4 sentences per theme group, each
    built from that group's theme keywords, so the keyword-count labels vary a lot from text to text."""
    sets = json.loads(Path(KEYWORDS).read_text(encoding="utf-8"))
    vocab = {g: sorted({w for t in themes for w in sets[t] if " " not in w}) for g, themes in GROUPS.items()}
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences = [rng.choice(FILLER) for _ in range(rng.randint(1, 3))]
        for group, words in vocab.items():
            for _ in range(rng.choice([0, 0, 1, 2, 3, 4])):
                a, b, c = rng.sample(words, 3)
                sentences.append(f"They spoke of {a} and {b}, and of the {c} to come.")
        rng.shuffle(sentences)
        texts.append(" ".join(sentences))
    return texts


def write_made_splits(folder: Path, n: int = 300, seed: int = 11) -> dict[str, Path]:
    """train/val/test JSONL (80/10/10, the seed's record format) of :func:`made_texts` with labels from
    the seed's keyword counting rule per theme group (:func:`keyword_scores`)."""
    texts = made_texts(n, seed)
    labels = keyword_scores(texts)
    folder.mkdir(parents=True, exist_ok=True)
    cut1, cut2 = int(n * 0.8), int(n * 0.9)
    out = {}
    for name, (lo, hi) in {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n)}.items():
        path = folder / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(lo, hi):
                fh.write(json.dumps({"id": f"made-{i}", "title": "", "content": texts[i], "url": "",
                                     "labels": [float(v) for v in labels[i]], "dimension_names": DIMS}) + "\n")
        out[name] = path
    return out
