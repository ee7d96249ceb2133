"""From corpus documents to token windows on disk, as the seed made them.

1. **Chunks.** The documents are joined with blank lines, split on ``"\\n\\n"`` and paragraphs packed
   greedily into chunks while the chunk stays under ``chunk_chars`` characters (500 for books); chunks of
   at most ``min_chunk_chars`` characters are dropped (the seed's corpus recipe: 100).
2. **Split by chunk.** The chunk list is shuffled with numpy's legacy generator seeded 42 (the same
   permutation as the seed's ``np.random.seed(42); np.random.shuffle(chunks)``, without touching numpy's
   global state) and cut 90/10.
3. **Tokenizer** on the training chunks (``tokenizer.py``).
4. **Tokens on disk.** Each split is encoded once (``<BOS>`` + ids + ``<EOS>`` per chunk) into one flat
   ``<split>.tokens.bin`` (uint16, or uint32 for vocabularies over 65,535) read back with ``np.memmap``,
   so a corpus larger than memory streams; ``<split>.windows.npy`` holds ``(start, end)`` per window:
   windows of up to ``window + 1`` tokens at stride ``window // 2`` within a chunk, kept when
   longer than 10 tokens (the seed's samples: training and the seed's metric); ``<split>.cover.npy``
   holds windows covering every token with ``score_from``, the first target not already scored by the
   chunk's previous window, so token-weighted perplexity and bits per byte count every token once.

Everything lands in one folder that appears only when complete (``dataset.json`` holds the counts).

**Reuse.** ``tokenizer_info.json`` and ``dataset.json`` record what they were made from: the digest of the
joined texts (``text_sha256``, the corpus records the same digest), the experiment's corpus, split and
tokenizer settings and, for a dataset, the sha256 of the tokenizer it encoded with. ``dataset.json``'s
``fingerprint`` hashes all of it, so the training and evaluation fingerprints built on it change when a
book does; :func:`existing_tokenizer` / :func:`existing_dataset` return a finished folder made from the
same inputs, so a re-materialization re-tokenizes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillery_assets.io import atomic_path, atomic_write_text
from distillery_assets.io.hashing import sha256_file, sha256_text
from distillery_assets.thyme.experiments import DatasetRecipe, Experiment, TokenizerRecipe
from distillery_assets.thyme.tokenizer import PAD_ID, TOKENIZER_FILE, encode_chunks, load_tokenizer, save_tokenizer, train_bpe

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
SPLITS = ("train", "val")
DATASET_FORMAT = 2  # 2: fingerprints cover the texts and the tokenizer file, not only the settings
TRAINED_HERE = "trained-in-place"  # the tokenizer identity of a dataset that trained its own


class DatasetError(ValueError):
    """A dataset that cannot be built or read; the message names the folder or the setting."""


# ---------------------------------------------------------------------------------------------- chunks

def chunk_text(text: str, chunk_chars: int, min_chunk_chars: int = 0) -> list[str]:
    """Paragraphs (split on blank lines) packed while the chunk stays under ``chunk_chars`` characters."""
    chunks: list[str] = []
    current = ""
    for para in text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        if len(current) + len(para) < chunk_chars:
            current += para + "\n\n"
        else:
            if current:
                chunks.append(current.strip())
            current = para + "\n\n"
    if current.strip():
        chunks.append(current.strip())
    return [c for c in chunks if len(c) > min_chunk_chars]


def split_chunks(chunks: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """The seed's split: shuffle with the legacy Mersenne-Twister generator seeded ``seed``, cut by chunk."""
    order = list(chunks)
    np.random.RandomState(seed).shuffle(order)  # == np.random.seed(seed); np.random.shuffle(order)
    cut = int(len(order) * (1 - val_fraction))
    return order[:cut], order[cut:]


def seed_windows(n_tokens: int, window: int, stride: int, min_tokens: int) -> list[tuple[int, int]]:
    """The seed's training/validation samples inside one chunk: ``(start, end)`` of up to ``window + 1``
    tokens, starts ``range(0, max(1, n - window), stride)``, kept when at least ``min_tokens`` long.

    (Inferred: the seed's code is not in the references, and this rule gives the ~305 steps of batch 32
    per epoch measured on the books; a long chunk's last few tokens past the final window are not used.)"""
    out = []
    for start in range(0, max(1, n_tokens - window), stride):
        end = min(start + window + 1, n_tokens)
        if end - start >= min_tokens:
            out.append((start, end))
    return out


def cover_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows that cover every token of a chunk: ``(start, end, score_from)``, where ``score_from`` is
    the first target not already scored by the previous window (target 0, the ``<BOS>``, never is)."""
    out, start, covered = [], 0, 1
    while n_tokens >= 2:
        end = min(start + window + 1, n_tokens)
        out.append((start, end, max(covered, start + 1)))
        covered = end
        if end >= n_tokens:
            break
        start += stride
    return out


# ------------------------------------------------------------------------------------------ the dataset

@dataclass
class Split:
    """One split on disk: the flat token array (memory-mapped) and its windows."""

    name: str
    tokens: np.ndarray
    windows: np.ndarray  # (n, 2) int64: start, end of the seed's samples (training, the seed's metric)
    cover: np.ndarray  # (m, 3) int64: start, end, score_from: every token scored once (bpb, token ppl)
    text_bytes: int
    chunks: int

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, i: int) -> np.ndarray:
        start, end = self.windows[i]
        return np.asarray(self.tokens[start:end], dtype=np.int64)

    @property
    def scored_tokens(self) -> int:
        """Targets of the covering windows: every token of the split but each chunk's ``<BOS>``."""
        return int((self.cover[:, 1] - self.cover[:, 2]).sum())

    def examples(self) -> WindowExamples:
        return WindowExamples(self)


class WindowExamples(Sequence):
    """The windows of a split as the shared loop's ``Example`` rows, built on access (nothing held)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i):
        from distillery_assets.training.chat_data import Example

        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        ids = self.split.window(i).tolist()
        return Example(ids, list(ids), f"{self.split.name}:{i}")


@dataclass
class Dataset:
    folder: Path
    info: dict[str, Any]
    train: Split
    val: Split

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / TOKENIZER_FILE

    def tokenizer(self):
        return load_tokenizer(self.tokenizer_path)

    @property
    def vocab_size(self) -> int:
        return int(self.info["tokenizer"]["vocab_size"])

    def val_chunks(self) -> list[str]:
        with open(self.folder / "val.chunks.jsonl", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def _tokenizer_texts(train: list[str], val: list[str], recipe: TokenizerRecipe, seed: int) -> list[str]:
    texts = train + val if recipe.train_on == "all" else list(train)
    if recipe.max_training_chunks and len(texts) > recipe.max_training_chunks:
        pick = np.random.RandomState(seed).choice(len(texts), recipe.max_training_chunks, replace=False)
        texts = [texts[i] for i in sorted(pick)]
    return texts


def _write_split(tmp: Path, name: str, tok, chunks: list[str], recipe: DatasetRecipe, dtype) -> dict[str, Any]:
    windows, cover, offset, short = [], [], 0, 0
    with open(tmp / f"{name}.tokens.bin", "wb") as fh:
        for ids in encode_chunks(tok, chunks):
            arr = np.asarray(ids, dtype=dtype)
            arr.tofile(fh)
            ws = seed_windows(len(arr), recipe.window, recipe.window_stride, recipe.min_window_tokens)
            short += not ws
            windows.extend((offset + s, offset + e) for s, e in ws)
            cover.extend((offset + s, offset + e, offset + f) for s, e, f in
                         cover_windows(len(arr), recipe.window, recipe.window_stride))
            offset += len(arr)
    np.save(tmp / f"{name}.windows.npy", np.asarray(windows, dtype=np.int64).reshape(-1, 2))
    np.save(tmp / f"{name}.cover.npy", np.asarray(cover, dtype=np.int64).reshape(-1, 3))
    return {"chunks": len(chunks), "tokens": offset, "windows": len(windows), "cover_windows": len(cover),
            "chunks_without_window": short, "characters": sum(len(c) for c in chunks),
            "text_bytes": sum(len(c.encode("utf-8")) for c in chunks)}


def experiment_chunks(texts: Iterable[str], exp: Experiment,
                      folder: Path) -> tuple[list[str], list[str], list[str], str]:
    """All chunks, the training and validation chunks of ``exp`` (errors name ``folder``), and the sha256
    of the joined texts (the corpus's ``text_sha256``)."""
    recipe = exp.dataset
    joined = "\n\n".join(texts)
    text_sha = sha256_text(joined)
    chunks = chunk_text(joined, recipe.chunk_chars, recipe.min_chunk_chars)
    del joined
    if len(chunks) < 2:
        raise DatasetError(f"{folder}: the corpus makes {len(chunks)} chunk(s); at least 2 are needed to split")
    train, val = split_chunks(chunks, recipe.val_fraction, recipe.split_seed)
    if not val or not train:
        raise DatasetError(f"{folder}: dataset.val_fraction={recipe.val_fraction} leaves an empty split "
                           f"of {len(chunks)} chunks")
    return chunks, train, val, text_sha


def tokenizer_key(exp: Experiment, text_sha256: str) -> str:
    """What a tokenizer is made from: the texts' digest and the corpus, split and tokenizer settings."""
    body = {"format": DATASET_FORMAT, "settings": exp.fingerprint("dataset"), "texts": text_sha256}
    return sha256_text(json.dumps(body, sort_keys=True))[:16]


def dataset_fingerprint(exp: Experiment, text_sha256: str, tokenizer: Path | None) -> str:
    """The dataset's identity, which training and evaluation fingerprints build on: the texts' digest,
    the settings and the tokenizer file it encodes with (or the tokenizer it trains itself)."""
    body = {"format": DATASET_FORMAT, "settings": exp.fingerprint("dataset"), "texts": text_sha256,
            "tokenizer": sha256_file(tokenizer) if tokenizer is not None else TRAINED_HERE}
    return sha256_text(json.dumps(body, sort_keys=True))[:16]


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def existing_tokenizer(folder: Path, exp: Experiment, text_sha256: str) -> dict[str, Any] | None:
    """``tokenizer_info.json`` of a finished tokenizer made from the same texts and settings, else None."""
    folder = Path(folder)
    info = _read_info(folder / TOKENIZER_INFO)
    if not info or info.get("key") != tokenizer_key(exp, text_sha256) or not (folder / TOKENIZER_FILE).exists():
        return None
    return info


def existing_dataset(folder: Path, exp: Experiment, text_sha256: str, *,
                     tokenizer: Path | None = None) -> Dataset | None:
    """The finished dataset in ``folder`` if it was made from the same texts, settings and tokenizer."""
    folder = Path(folder)
    info = _read_info(folder / DATASET_FILE)
    if not info or info.get("fingerprint") != dataset_fingerprint(exp, text_sha256, tokenizer):
        return None
    try:
        return open_dataset(folder)
    except (DatasetError, OSError, KeyError, ValueError):
        return None


TOKENIZER_INFO = "tokenizer_info.json"


def build_tokenizer(texts: Iterable[str], exp: Experiment, folder: Path) -> dict[str, Any]:
    """Train the experiment's BPE on its training chunks (or all chunks with ``train_on: all``) into
    ``folder/tokenizer.json`` with ``tokenizer_info.json`` beside it; the folder appears only when complete."""
    folder = Path(folder)
    chunks, train, val, text_sha = experiment_chunks(texts, exp, folder)
    texts_used = _tokenizer_texts(train, val, exp.tokenizer, exp.dataset.split_seed)
    tok = train_bpe(texts_used, exp.tokenizer.vocab_size, exp.tokenizer.min_frequency)
    info = {"experiment": exp.name, "key": tokenizer_key(exp, text_sha), "settings": exp.fingerprint("dataset"),
            "text_sha256": text_sha, "vocab_size": tok.get_vocab_size(),
            "requested_vocab_size": exp.tokenizer.vocab_size, "trained_on": exp.tokenizer.train_on,
            "training_chunks": len(texts_used), "chunks": len(chunks), "train_chunks": len(train),
            "val_chunks": len(val), "specials": {"<PAD>": 0, "<UNK>": 1, "<BOS>": 2, "<EOS>": 3}}
    with atomic_path(folder, is_dir=True) as tmp:
        save_tokenizer(tok, tmp)
        atomic_write_text(tmp / TOKENIZER_INFO, json.dumps(info, indent=1))
    log.info("tokenizer %s: vocabulary %d from %d chunks (%s)", folder, info["vocab_size"], len(texts_used),
             exp.tokenizer.train_on)
    return info


def build_dataset(texts: Iterable[str], exp: Experiment, folder: Path, *, tokenizer: Path | None = None) -> Dataset:
    """Chunk, split, train the tokenizer (or use ``tokenizer``, a ``tokenizer.json`` made by
    :func:`build_tokenizer` for this experiment), tokenize both splits into ``folder`` (atomically)."""
    folder = Path(folder)
    recipe = exp.dataset
    chunks, train, val, text_sha = experiment_chunks(texts, exp, folder)
    fingerprint = dataset_fingerprint(exp, text_sha, tokenizer)
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    else:
        tok = train_bpe(_tokenizer_texts(train, val, exp.tokenizer, recipe.split_seed), exp.tokenizer.vocab_size,
                        exp.tokenizer.min_frequency)
    vocab = tok.get_vocab_size()
    dtype = token_dtype(vocab)
    with atomic_path(folder, is_dir=True) as tmp:
        save_tokenizer(tok, tmp)
        info: dict[str, Any] = {
            "experiment": exp.name, "fingerprint": fingerprint, "settings": exp.fingerprint("dataset"),
            "text_sha256": text_sha, "chunks": len(chunks),
            "tokenizer": {"vocab_size": vocab, "requested_vocab_size": exp.tokenizer.vocab_size,
                          "trained_on": exp.tokenizer.train_on, "pad_id": PAD_ID},
            "dtype": np.dtype(dtype).name, "window": recipe.window, "stride": recipe.window_stride,
        }
        for name, part in (("train", train), ("val", val)):
            info[name] = _write_split(tmp, name, tok, part, recipe, dtype)
        if info["val"]["windows"] == 0:
            raise DatasetError(f"{folder}: the validation chunks make no window of at least "
                               f"{recipe.min_window_tokens} tokens; nothing to validate on")
        with open(tmp / "val.chunks.jsonl", "w", encoding="utf-8") as fh:
            for c in val:
                fh.write(json.dumps(c, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / DATASET_FILE, json.dumps(info, indent=1))
    log.info("dataset %s: %d chunks (%d train / %d val), vocab %d, %d / %d tokens", folder, len(chunks),
             len(train), len(val), vocab, info["train"]["tokens"], info["val"]["tokens"])
    return open_dataset(folder)


def split_from_chunks(name: str, tok, chunks: list[str], recipe: DatasetRecipe) -> Split:
    """A split held in memory (e.g. an out-of-domain book), cut into windows exactly as the dataset's splits."""
    ids = list(encode_chunks(tok, chunks))
    windows, cover, offset = [], [], 0
    for arr in ids:
        windows.extend((offset + s, offset + e) for s, e in
                       seed_windows(len(arr), recipe.window, recipe.window_stride, recipe.min_window_tokens))
        cover.extend((offset + s, offset + e, offset + f) for s, e, f in
                     cover_windows(len(arr), recipe.window, recipe.window_stride))
        offset += len(arr)
    tokens = np.asarray([t for arr in ids for t in arr], dtype=np.int64)
    return Split(name, tokens, np.asarray(windows, dtype=np.int64).reshape(-1, 2),
                 np.asarray(cover, dtype=np.int64).reshape(-1, 3), sum(len(c.encode("utf-8")) for c in chunks),
                 len(chunks))


def open_dataset(folder: Path) -> Dataset:
    folder = Path(folder)
    try:
        info = json.loads((folder / DATASET_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{folder}: not a thyme dataset (no {DATASET_FILE})") from None
    splits = {}
    for name in SPLITS:
        n = info[name]["tokens"]
        tokens = (np.memmap(folder / f"{name}.tokens.bin", dtype=info["dtype"], mode="r", shape=(n,))
                  if n else np.zeros(0, dtype=info["dtype"]))
        splits[name] = Split(name, tokens, np.load(folder / f"{name}.windows.npy"),
                             np.load(folder / f"{name}.cover.npy"), info[name]["text_bytes"], info[name]["chunks"])
    return Dataset(folder, info, splits["train"], splits["val"])
