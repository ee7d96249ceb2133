"""Thyme's tokenizer: a ``tokenizers`` BPE as the seed built it (Whitespace pre-tokenizer, min frequency 2,
specials ``<PAD> <UNK> <BOS> <EOS>`` = ids 0-3), trained on the training chunks only unless the
experiment asks for the seed's leak (``train_on: all``). Saved as one ``tokenizer.json``, atomically.

The Whitespace pre-tokenizer drops the spaces between words, so decoding joins tokens with spaces and
the token stream does not carry the exact whitespace of the text (the seed's choice, kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from distillery_assets.io import atomic_path

SPECIALS = ("<PAD>", "<UNK>", "<BOS>", "<EOS>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
TOKENIZER_FILE = "tokenizer.json"


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<UNK>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIALS), show_progress=False)
    tok.train_from_iterator(iter(texts), trainer=trainer)
    for i, name in enumerate(SPECIALS):
        if tok.token_to_id(name) != i:
            raise RuntimeError(f"tokenizer put {name} at id {tok.token_to_id(name)}, not {i}")
    return tok


def save_tokenizer(tok, folder: Path) -> Path:
    target = Path(folder) / TOKENIZER_FILE
    with atomic_path(target) as tmp:
        tok.save(str(tmp))
    return target


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    return Tokenizer.from_file(str(path))


def encode_chunks(tok, chunks: Iterable[str], batch: int = 1000, *, with_text: bool = False) -> Iterator:
    """``<BOS>`` + ids + ``<EOS>`` per chunk, as the seed encoded them, ``batch`` chunks at a time from any
    iterable; with ``with_text`` each item is ``(chunk, ids)``."""
    it = iter(chunks)
    while block := list(islice(it, batch)):
        for text, enc in zip(block, tok.encode_batch(block, add_special_tokens=False)):
            ids = [BOS_ID, *enc.ids, EOS_ID]
            yield (text, ids) if with_text else ids
