"""``books-seed`` prepares its data exactly as the seed's ``train_books.py`` did, and the corpus recipes chunk as
its ``train_corpus.py`` did (issue 25).

The reference is an independent transcription, in this file, of the seed's functions as
``../shared/reference/SEED_FACTS.md`` (section 002) states them: ``load_books`` (first START marker found,
keep what follows it; first END marker found, keep what precedes it; CRLF, blank-line and space clean-up;
books joined by a blank line), ``create_chunks`` (paragraphs joined by ONE space while
``len(current) + len(para) < chunk_size``; the corpus script drops chunks of 100 characters or fewer),
the split (``np.random.seed(42); np.random.shuffle(chunks)``, cut at ``int(n * 0.9)``), the encoding
(``[BOS] + ids + [EOS]``) and ``BookDataset``'s windows. Nothing here calls the project's chunking to make
the expected values; the project's output is compared with it chunk by chunk, token by token.

The books are the eight shipped ones, sorted by name (the seed took them in ``glob`` order). With them the
seed makes 8,015 chunks, 7,213 for training and 802 for validation (the project made 8,041 = 7,236 / 805
before issue 25: it joined paragraphs with a blank line and counted it).
"""

import glob
import json
import os
import re

import numpy as np
import pytest

from distillery_assets.paths import inputs_dir
from distillery_assets.thyme import corpus as C
from distillery_assets.thyme.dataset import iter_chunks, iter_paragraphs, seed_windows, split_order
from distillery_assets.thyme.experiments import load_experiment

BOOKS = inputs_dir() / "thyme_books"
SEED_CHUNKS, SEED_TRAIN, SEED_VAL = 8015, 7213, 802


# ------------------------------------------------------------------ the seed's functions, transcribed

def seed_load_books(book_dir) -> str:
    texts = []
    for path in sorted(glob.glob(os.path.join(str(book_dir), "*.txt"))):
        with open(path, encoding="utf-8", errors="ignore") as fh:
            text = fh.read()
        for marker in ["*** START OF", "***START OF"]:
            if marker in text:
                text = text.split(marker, 1)[-1]
                break
        for marker in ["*** END OF", "***END OF", "End of Project Gutenberg"]:
            if marker in text:
                text = text.split(marker, 1)[0]
                break
        text = re.sub(r"\r\n", "\n", text)
        text = re.sub(r"\n{3,}", "\n\n", text)
        text = re.sub(r"[ \t]+", " ", text)
        texts.append(text.strip())
    return "\n\n".join(texts)


def seed_create_chunks(text: str, chunk_size: int, drop_at_most: int | None = None) -> list[str]:
    """``train_books.create_chunks`` (``drop_at_most=None``) or ``train_corpus.create_chunks`` (100)."""
    chunks, current = [], ""

    def keep(chunk):
        return chunk and (drop_at_most is None or len(chunk) > drop_at_most)

    for para in text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        if len(current) + len(para) < chunk_size:
            current += " " + para if current else para
        else:
            if keep(current):
                chunks.append(current)
            current = para
    if keep(current):
        chunks.append(current)
    return chunks


def seed_split(chunks: list[str], train_share: float = 0.9) -> tuple[list[str], list[str]]:
    chunks = list(chunks)
    state = np.random.get_state()
    try:
        np.random.seed(42)
        np.random.shuffle(chunks)
    finally:
        np.random.set_state(state)
    cut = int(len(chunks) * train_share)
    return chunks[:cut], chunks[cut:]


def seed_train_tokenizer(texts: list[str], folder, vocab_size: int = 10000):
    """``BookTokenizer.train``: the texts written one a line to a file, the BPE trained on that file."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.trainers import BpeTrainer

    path = os.path.join(str(folder), "books_train.txt")
    with open(path, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(t + "\n")
    tok = Tokenizer(BPE(unk_token="<UNK>"))
    tok.pre_tokenizer = Whitespace()
    tok.train([path], BpeTrainer(vocab_size=vocab_size, special_tokens=["<PAD>", "<UNK>", "<BOS>", "<EOS>"],
                                 min_frequency=2))
    return tok


def seed_samples(ids: list[int], max_len: int = 128) -> list[list[int]]:
    """``BookDataset``: windows of ``max_len + 1`` tokens every ``max_len // 2``, kept when longer than 10."""
    out = []
    for i in range(0, max(1, len(ids) - max_len), max_len // 2):
        window = ids[i:i + max_len + 1]
        if len(window) > 10:
            out.append(window)
    return out


# ------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def seed_chunks() -> list[str]:
    return seed_create_chunks(seed_load_books(BOOKS), 500)


@pytest.fixture(scope="module")
def project_docs() -> list[str]:
    exp = load_experiment("books-seed")
    items = list(C.iter_sources(exp.corpus))
    assert all(isinstance(i, C.Document) for i in items), [i for i in items if isinstance(i, C.Drop)]
    assert [d.name for d in items] == sorted(d.name for d in items) and len(items) == 8
    return [d.text for d in items]


# ---------------------------------------------------------------------------------------- tests

def test_the_seed_reference_makes_the_seeds_figures(seed_chunks):
    train, val = seed_split(seed_chunks)
    assert (len(seed_chunks), len(train), len(val)) == (SEED_CHUNKS, SEED_TRAIN, SEED_VAL)


def test_local_books_are_cut_and_cleaned_as_the_seeds_loader(project_docs):
    assert "\n\n".join(project_docs) == seed_load_books(BOOKS)
    # the rest of the START marker line stays in the text, as in the seed
    assert project_docs[0].startswith("THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***")


def test_books_seed_chunks_and_split_are_the_seeds_chunk_by_chunk(project_docs, seed_chunks):
    exp = load_experiment("books-seed")
    ours = list(iter_chunks(iter_paragraphs(project_docs), exp.dataset.chunk_chars, exp.dataset.min_chunk_chars))
    assert len(ours) == SEED_CHUNKS
    for i, (a, b) in enumerate(zip(ours, seed_chunks)):
        assert a == b, f"chunk {i} differs"
    train_idx, val_idx = split_order(len(ours), exp.dataset.val_fraction, exp.dataset.split_seed)
    seed_train, seed_val = seed_split(seed_chunks)
    assert [ours[i] for i in train_idx] == seed_train and [ours[i] for i in val_idx] == seed_val
    assert (len(train_idx), len(val_idx)) == (SEED_TRAIN, SEED_VAL)


def test_corpus_chunking_is_the_seeds_corpus_script():
    """``distillery`` and ``corpus-seed`` pack to 1,000 characters and drop chunks of 100 or fewer, as
    ``train_corpus.create_chunks``; checked on the shipped books and on text made of short paragraphs."""
    text = seed_load_books(BOOKS)
    short = "\n\n".join(["a" * 40, "b" * 70, "c" * 990, "d" * 9, "e" * 95, "f" * 2000, "g" * 30])
    for name in ("distillery", "corpus-seed"):
        d = load_experiment(name).dataset
        assert (d.chunk_chars, d.min_chunk_chars) == (1000, 100), name
        for sample in (text, short):
            ours = list(iter_chunks(iter_paragraphs([sample]), d.chunk_chars, d.min_chunk_chars))
            assert ours == seed_create_chunks(sample, 1000, 100)
    # 990 + 9 < 1000: joined, 1,000 characters with the space; the 95- and 30-character chunks are dropped
    assert seed_create_chunks(short, 1000, 100) == ["a" * 40 + " " + "b" * 70, "c" * 990 + " " + "d" * 9, "f" * 2000]


def test_books_seed_dataset_is_the_seeds_tokenizer_input_tokens_and_windows(project_docs, seed_chunks, tmp_path,
                                                                            monkeypatch):
    """The whole dataset build on the eight books (about 10 s): the tokenizer learns from exactly the seed's
    training chunks (books-seed's one change: the seed's also saw validation), every chunk is encoded as
    ``[BOS] + ids + [EOS]``, and the windows are ``BookDataset``'s, window for window."""
    from distillery_assets.thyme import dataset as D

    seen: list[list[str]] = []
    real_train_bpe = D.train_bpe

    def recording_train_bpe(texts, *args, **kwargs):
        texts = list(texts)
        seen.append(texts)
        return real_train_bpe(texts, *args, **kwargs)

    monkeypatch.setattr(D, "train_bpe", recording_train_bpe)
    exp = load_experiment("books-seed")
    ds = D.build_dataset(iter(project_docs), exp, tmp_path / "ds")
    seed_train, seed_val = seed_split(seed_chunks)
    assert sorted(seen[0]) == sorted(seed_train) and len(seen) == 1  # the tokenizer's input
    assert (ds.info["chunks"], ds.info["train"]["chunks"], ds.info["val"]["chunks"]) == (SEED_CHUNKS, SEED_TRAIN, SEED_VAL)
    assert ds.val_chunks() == seed_val
    tok = ds.tokenizer()
    bos, eos = tok.token_to_id("<BOS>"), tok.token_to_id("<EOS>")
    for split, chunks in ((ds.train, seed_train), (ds.val, seed_val)):
        encoded = [[bos, *tok.encode(c).ids, eos] for c in chunks]  # the seed's BookTokenizer.encode
        flat = np.asarray([t for ids in encoded for t in ids])
        assert np.array_equal(np.asarray(split.tokens), flat)
        windows = [w for ids in encoded for w in seed_samples(ids, exp.dataset.window)]
        assert len(split) == len(windows)
        for i, want in enumerate(windows):
            assert split.window(i).tolist() == want, f"{split.name} window {i}"
    assert split.text_bytes == sum(len(c.encode("utf-8")) for c in seed_val)
    # the seed's way of training the tokenizer (a file, a chunk a line) on the same chunks: the same BPE
    (tmp_path / "seed").mkdir()
    theirs = seed_train_tokenizer(seed_train, tmp_path / "seed")
    assert theirs.get_vocab() == tok.get_vocab()
    assert json.loads(theirs.to_str())["model"]["merges"] == json.loads(tok.to_str())["model"]["merges"]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["books-seed", "books-seed-leak"])
def test_tokenizer_input_is_the_seeds_training_chunks_or_with_the_leak_all_of_them(name, project_docs, seed_chunks,
                                                                                   tmp_path, monkeypatch):
    from distillery_assets.thyme import dataset as D

    seen = []

    def capture(texts, *args, **kwargs):
        seen.extend(texts)
        raise _Stop

    monkeypatch.setattr(D, "train_bpe", capture)
    with pytest.raises(_Stop):
        D.build_tokenizer(iter(project_docs), load_experiment(name), tmp_path / "tok")
    seed_train, seed_val = seed_split(seed_chunks)
    # books-seed: the training chunks only (the platform's rule); books-seed-leak: every chunk in the seed's
    # shuffled order, as the seed's tokenizer.train(chunks)
    assert seen == (seed_train if name == "books-seed" else seed_train + seed_val)
    assert not (tmp_path / "tok").exists()


def test_window_rule_is_book_datasets():
    rng = np.random.default_rng(3)
    for n in [*range(0, 400), *rng.integers(400, 3000, 50).tolist()]:
        ids = list(range(n))
        for window in (128, 64, 16):
            got = [ids[s:e] for s, e in seed_windows(n, window, window // 2, 11)]
            assert got == seed_samples(ids, window), (n, window)
