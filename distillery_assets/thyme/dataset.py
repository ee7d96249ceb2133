"""From corpus documents to token windows on disk, as the seed made them.

1. **Chunks** (the seed's ``create_chunks``, both scripts). The documents are joined with blank lines and
   split on ``"\\n\\n"``; each paragraph is stripped, empty ones skipped, and a paragraph joins the current
   chunk with ONE SPACE while ``len(chunk) + len(paragraph) < chunk_chars`` (the joining space not counted,
   so a chunk can pass ``chunk_chars`` by its joins); otherwise the chunk is emitted and the paragraph starts
   the next. An emitted chunk of at most ``min_chunk_chars`` characters is dropped (books: 500 / 0; the
   seed's corpus recipe: 1000 / 100).
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
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillery_assets.io import atomic_path, atomic_write_text, read_jsonl
from distillery_assets.io.hashing import JoinedDigest, json_fingerprint, sha256_file
from distillery_assets.thyme.experiments import DatasetRecipe, Experiment, TokenizerRecipe
from distillery_assets.thyme.tokenizer import PAD_ID, TOKENIZER_FILE, encode_chunks, load_tokenizer, save_tokenizer, train_bpe

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
SPLITS = ("train", "val")
# 2: fingerprints cover the texts and the tokenizer file, not only the settings;
# 3: the seed's chunk packing (one space between paragraphs, not counted in the length test), issue 25
DATASET_FORMAT = 3
TRAINED_HERE = "trained-in-place"  # the tokenizer identity of a dataset that trained its own


class DatasetError(ValueError):
    """A dataset that cannot be built or read; the message names the folder or the setting."""


# ---------------------------------------------------------------------------------------------- chunks

def iter_paragraphs(texts: Iterable[str], sep: str = "\n\n") -> Iterator[str]:
    """The pieces of ``sep.join(texts).split(sep)``, streamed: only the current document and the unfinished
    piece before it are held."""
    carry: str | None = None
    for text in texts:
        parts = (text if carry is None else carry + sep + text).split(sep)
        yield from parts[:-1]
        carry = parts[-1]
    if carry is not None:
        yield carry


def iter_chunks(paragraphs: Iterable[str], chunk_chars: int, min_chunk_chars: int = 0) -> Iterator[str]:
    """The seed's ``create_chunks`` over streamed paragraphs: stripped paragraphs joined by one space while
    ``len(current) + len(paragraph) < chunk_chars``; chunks of at most ``min_chunk_chars`` characters dropped
    (``0``: only empty ones, as the books script had it)."""
    current = ""
    for para in paragraphs:
        para = para.strip()
        if not para:
            continue
        if len(current) + len(para) < chunk_chars:
            current = f"{current} {para}" if current else para
            continue
        if len(current) > min_chunk_chars:
            yield current
        current = para
    if len(current) > min_chunk_chars:
        yield current


def chunk_text(text: str, chunk_chars: int, min_chunk_chars: int = 0) -> list[str]:
    """The chunks of one text (its paragraphs split on blank lines), as :func:`iter_chunks` packs them."""
    return list(iter_chunks(text.split("\n\n"), chunk_chars, min_chunk_chars))


def split_order(n_chunks: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seed's split as chunk indices: the permutation ``np.random.RandomState(seed).shuffle`` makes of
    ``n_chunks`` items (``permutation`` draws the same swaps), cut into training and validation."""
    order = np.random.RandomState(seed).permutation(n_chunks)
    cut = int(n_chunks * (1 - val_fraction))
    return order[:cut], order[cut:]


def split_chunks(chunks: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """The seed's split of an in-memory chunk list (``split_order`` on their indices)."""
    train, val = split_order(len(chunks), val_fraction, seed)
    return [chunks[i] for i in train], [chunks[i] for i in val]


def seed_windows(n_tokens: int, window: int, stride: int, min_tokens: int) -> list[tuple[int, int]]:
    """The seed's training/validation samples inside one chunk: ``(start, end)`` of up to ``window + 1``
    tokens, starts ``range(0, max(1, n - window), stride)``, kept when at least ``min_tokens`` long (the
    seed's ``BookDataset``: ``ids[i:i + max_len + 1]`` kept when longer than 10). A long chunk's last few
    tokens past the final window are not used, as in the seed."""
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
        return read_jsonl(self.folder / "val.chunks.jsonl", objects=False)


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


class ChunkSpool:
    """The experiment's chunks spooled to one file in a scratch folder (UTF-8, with an offset per chunk),
    read back in any order: the seed's split shuffles every chunk, and this keeps that split without
    holding the chunks in memory (a Hub-sized corpus has millions). Made by :func:`spool_chunks`."""

    def __init__(self, path: Path, offsets: np.ndarray, text_sha256: str):
        self.path, self.offsets, self.text_sha256 = path, offsets, text_sha256
        self._fh = open(path, "rb")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> str:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        self._fh.seek(start)
        return self._fh.read(end - start).decode("utf-8")

    def iter(self, indices: Iterable[int]) -> Iterator[str]:
        for i in indices:
            yield self.get(int(i))

    def close(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


def spool_chunks(texts: Iterable[str], recipe: DatasetRecipe, scratch: Path) -> ChunkSpool:
    """Chunk ``texts`` as the seed did (their ``"\n\n"`` join) into ``scratch/chunks.spool``, digesting the
    joined texts on the way (:class:`~distillery_assets.io.hashing.JoinedDigest`, the corpus's ``text_sha256``)."""
    digest = JoinedDigest()

    def digested() -> Iterator[str]:
        for text in texts:
            digest.add(text)
            yield text

    path = Path(scratch) / "chunks.spool"
    offsets = array("q", [0])
    with open(path, "wb") as fh:
        for chunk in iter_chunks(iter_paragraphs(digested()), recipe.chunk_chars, recipe.min_chunk_chars):
            data = chunk.encode("utf-8")
            fh.write(data)
            offsets.append(offsets[-1] + len(data))
    return ChunkSpool(path, np.frombuffer(offsets, dtype=np.int64), digest.hexdigest())


def _tokenizer_indices(train: np.ndarray, val: np.ndarray, recipe: TokenizerRecipe, seed: int) -> np.ndarray:
    """The chunks the tokenizer learns from: the training chunks (with ``val`` for ``train_on: all``), a
    seeded sample of them past ``max_training_chunks``."""
    idx = np.concatenate([train, val]) if recipe.train_on == "all" else train
    if recipe.max_training_chunks and len(idx) > recipe.max_training_chunks:
        pick = np.random.RandomState(seed).choice(len(idx), recipe.max_training_chunks, replace=False)
        idx = idx[np.sort(pick)]
    return idx


def _write_split(tmp: Path, name: str, tok, chunks: Iterable[str], recipe: DatasetRecipe, dtype) -> dict[str, Any]:
    """Encode ``chunks`` into ``<name>.tokens.bin`` with its windows; windows are kept as packed int64
    arrays, not Python tuples, so their memory is 16 (24) bytes a window."""
    windows, cover = array("q"), array("q")
    offset = short = n_chunks = characters = text_bytes = 0
    with open(tmp / f"{name}.tokens.bin", "wb") as fh:
        for chunk, ids in encode_chunks(tok, chunks, with_text=True):
            n_chunks += 1
            characters += len(chunk)
            text_bytes += len(chunk.encode("utf-8"))
            arr = np.asarray(ids, dtype=dtype)
            arr.tofile(fh)
            ws = seed_windows(len(arr), recipe.window, recipe.window_stride, recipe.min_window_tokens)
            short += not ws
            for s, e in ws:
                windows.extend((offset + s, offset + e))
            for s, e, f in cover_windows(len(arr), recipe.window, recipe.window_stride):
                cover.extend((offset + s, offset + e, offset + f))
            offset += len(arr)
    np.save(tmp / f"{name}.windows.npy", np.frombuffer(windows, dtype=np.int64).reshape(-1, 2))
    np.save(tmp / f"{name}.cover.npy", np.frombuffer(cover, dtype=np.int64).reshape(-1, 3))
    return {"chunks": n_chunks, "tokens": offset, "windows": len(windows) // 2, "cover_windows": len(cover) // 3,
            "chunks_without_window": short, "characters": characters, "text_bytes": text_bytes}


def _split(spool: ChunkSpool, exp: Experiment, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The training and validation chunk indices of ``exp`` over the spooled chunks (errors name ``folder``)."""
    recipe = exp.dataset
    if len(spool) < 2:
        raise DatasetError(f"{folder}: the corpus makes {len(spool)} chunk(s); at least 2 are needed to split")
    train, val = split_order(len(spool), recipe.val_fraction, recipe.split_seed)
    if not len(val) or not len(train):
        raise DatasetError(f"{folder}: dataset.val_fraction={recipe.val_fraction} leaves an empty split "
                           f"of {len(spool)} chunks")
    return train, val


def tokenizer_key(exp: Experiment, text_sha256: str) -> str:
    """What a tokenizer is made from: the texts' digest and the corpus, split and tokenizer settings."""
    body = {"format": DATASET_FORMAT, "settings": exp.fingerprint("dataset"), "texts": text_sha256}
    return json_fingerprint(body)


def dataset_fingerprint(exp: Experiment, text_sha256: str, tokenizer: Path | None) -> str:
    """The dataset's identity, which training and evaluation fingerprints build on: the texts' digest,
    the settings and the tokenizer file it encodes with (or the tokenizer it trains itself)."""
    body = {"format": DATASET_FORMAT, "settings": exp.fingerprint("dataset"), "texts": text_sha256,
            "tokenizer": sha256_file(tokenizer) if tokenizer is not None else TRAINED_HERE}
    return json_fingerprint(body)


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
    with atomic_path(folder, is_dir=True) as tmp:
        spool = spool_chunks(texts, exp.dataset, tmp)
        try:
            train, val = _split(spool, exp, folder)
            used = _tokenizer_indices(train, val, exp.tokenizer, exp.dataset.split_seed)
            tok = train_bpe(spool.iter(used), exp.tokenizer.vocab_size, exp.tokenizer.min_frequency)
        finally:
            spool.close()
        info = {"experiment": exp.name, "key": tokenizer_key(exp, spool.text_sha256),
                "settings": exp.fingerprint("dataset"), "text_sha256": spool.text_sha256,
                "vocab_size": tok.get_vocab_size(), "requested_vocab_size": exp.tokenizer.vocab_size,
                "trained_on": exp.tokenizer.train_on, "training_chunks": len(used), "chunks": len(spool),
                "train_chunks": len(train), "val_chunks": len(val),
                "specials": {"<PAD>": 0, "<UNK>": 1, "<BOS>": 2, "<EOS>": 3}}
        save_tokenizer(tok, tmp)
        atomic_write_text(tmp / TOKENIZER_INFO, json.dumps(info, indent=1))
    log.info("tokenizer %s: vocabulary %d from %d chunks (%s)", folder, info["vocab_size"], len(used),
             exp.tokenizer.train_on)
    return info


def build_dataset(texts: Iterable[str], exp: Experiment, folder: Path, *, tokenizer: Path | None = None) -> Dataset:
    """Chunk, split, train the tokenizer (or use ``tokenizer``, a ``tokenizer.json`` made by
    :func:`build_tokenizer` for this experiment), tokenize both splits into ``folder`` (atomically).
    The chunks stream through a spool file; what stays in memory is two int64s a chunk and the windows."""
    folder = Path(folder)
    recipe = exp.dataset
    with atomic_path(folder, is_dir=True) as tmp:
        spool = spool_chunks(texts, recipe, tmp)
        try:
            train, val = _split(spool, exp, folder)
            if tokenizer is not None:
                tok = load_tokenizer(tokenizer)
            else:
                tok = train_bpe(spool.iter(_tokenizer_indices(train, val, exp.tokenizer, recipe.split_seed)),
                                exp.tokenizer.vocab_size, exp.tokenizer.min_frequency)
            vocab = tok.get_vocab_size()
            dtype = token_dtype(vocab)
            save_tokenizer(tok, tmp)
            info: dict[str, Any] = {
                "experiment": exp.name, "fingerprint": dataset_fingerprint(exp, spool.text_sha256, tokenizer),
                "settings": exp.fingerprint("dataset"), "text_sha256": spool.text_sha256, "chunks": len(spool),
                "tokenizer": {"vocab_size": vocab, "requested_vocab_size": exp.tokenizer.vocab_size,
                              "trained_on": exp.tokenizer.train_on, "pad_id": PAD_ID},
                "dtype": np.dtype(dtype).name, "window": recipe.window, "stride": recipe.window_stride,
            }
            info["train"] = _write_split(tmp, "train", tok, spool.iter(train), recipe, dtype)
            with open(tmp / "val.chunks.jsonl", "w", encoding="utf-8") as fh:
                def val_chunks() -> Iterator[str]:
                    for c in spool.iter(val):
                        fh.write(json.dumps(c, ensure_ascii=False) + "\n")
                        yield c
                info["val"] = _write_split(tmp, "val", tok, val_chunks(), recipe, dtype)
        finally:
            spool.close()
        if info["val"]["windows"] == 0:
            raise DatasetError(f"{folder}: the validation chunks make no window of at least "
                               f"{recipe.min_window_tokens} tokens; nothing to validate on")
        atomic_write_text(tmp / DATASET_FILE, json.dumps(info, indent=1))
    log.info("dataset %s: %d chunks (%d train / %d val), vocab %d, %d / %d tokens", folder, info["chunks"],
             info["train"]["chunks"], info["val"]["chunks"], vocab, info["train"]["tokens"], info["val"]["tokens"])
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
