"""Corpus, tokenizer and dataset are rebuilt only when what they are made from changes: the corpus's source key
follows the books' bytes and the recipe; the tokenizer and the dataset follow the corpus's text digest, the
settings and (for the dataset) the tokenizer file; the dataset's fingerprint, which training and evaluation
fingerprints build on, changes with the texts."""

import shutil

import pytest

pytest.importorskip("tokenizers")

from distillery_assets.io.hashing import JoinedDigest, sha256_text  # noqa: E402
from distillery_assets.paths import inputs_dir  # noqa: E402
from distillery_assets.thyme.corpus import (  # noqa: E402
    corpus_stats, existing_corpus, iter_sources, read_corpus, read_drops, source_key, write_corpus,
)
from distillery_assets.thyme.dataset import (  # noqa: E402
    build_dataset, build_tokenizer, existing_dataset, existing_tokenizer,
)
from distillery_assets.thyme.experiments import Experiment, load_experiment  # noqa: E402
from distillery_assets.thyme.tokenizer import TOKENIZER_FILE  # noqa: E402

BOOKS = ("alice_wonderland.txt", "prince.txt")


def _experiment(folder, **tokenizer) -> Experiment:
    body = load_experiment("books-cpu").model_dump(exclude={"name"})
    body["corpus"]["sources"] = [{"kind": "local", "path": str(folder), "max_chars_per_book": 12_000}]
    body["dataset"]["window"] = 32
    body["tokenizer"] = {"vocab_size": 300, "min_frequency": 2, **tokenizer}
    return Experiment.model_validate(body).model_copy(update={"name": "rebuild"})


@pytest.fixture()
def books(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    src = inputs_dir() / "thyme_books"
    for name in BOOKS:
        shutil.copy(src / name, folder / name)
    (folder / "empty.txt").write_text("")  # one drop, recorded and read back on reuse
    return folder


def sha256_joined(texts, sep: str = "\n\n") -> str:
    digest = JoinedDigest(sep)
    for text in texts:
        digest.add(text)
    return digest.hexdigest()


def test_joined_digest_equals_the_digest_of_the_joined_string():
    texts = ["first", "second\n\nwith a blank line", "", "d\u00e9j\u00e0"]
    assert sha256_joined(texts) == sha256_text("\n\n".join(texts))
    assert sha256_joined([]) == sha256_text("")


def test_corpus_is_reused_for_the_same_books_and_rebuilt_when_a_book_changes(books, tmp_path):
    exp = _experiment(books)
    key = source_key(exp.corpus)
    assert source_key(exp.corpus) == key  # stable
    stats = write_corpus(iter_sources(exp.corpus), tmp_path / "corpus", key=key)
    assert stats.text_sha256 == sha256_text("\n\n".join(d.text for d in read_corpus(tmp_path / "corpus")))
    again = existing_corpus(tmp_path / "corpus", key)
    assert again is not None and again.text_sha256 == stats.text_sha256 and again.documents == stats.documents == 2
    assert [d.source for d in read_drops(tmp_path / "corpus")] == ["local:empty.txt"]

    with open(books / BOOKS[0], "a", encoding="utf-8") as fh:
        fh.write("\n\nOne more paragraph.\n")
    changed = source_key(exp.corpus)
    assert changed != key and existing_corpus(tmp_path / "corpus", changed) is None
    slimmer = exp.corpus.model_copy(update={"min_clean_chars": exp.corpus.min_clean_chars + 1})
    assert source_key(slimmer) not in (key, changed)  # the recipe counts too
    (tmp_path / "corpus" / stats.shards[0]).unlink()
    assert existing_corpus(tmp_path / "corpus", key) is None  # a damaged folder is not reused


def test_a_corpus_written_without_a_key_is_not_reused(books, tmp_path):
    exp = _experiment(books)
    write_corpus(iter_sources(exp.corpus), tmp_path / "corpus")
    assert corpus_stats(tmp_path / "corpus").source_key is None
    assert existing_corpus(tmp_path / "corpus", source_key(exp.corpus)) is None


def test_tokenizer_and_dataset_reused_for_the_same_texts_and_rebuilt_when_texts_or_tokenizer_change(books, tmp_path):
    exp = _experiment(books)
    write_corpus(iter_sources(exp.corpus), tmp_path / "corpus", key=source_key(exp.corpus))
    texts = [d.text for d in read_corpus(tmp_path / "corpus")]
    sha = corpus_stats(tmp_path / "corpus").text_sha256
    tok_dir, ds_dir = tmp_path / "tokenizer", tmp_path / "dataset"
    info = build_tokenizer(texts, exp, tok_dir)
    assert info["text_sha256"] == sha
    assert existing_tokenizer(tok_dir, exp, sha)["key"] == info["key"]
    ds = build_dataset(texts, exp, ds_dir, tokenizer=tok_dir / TOKENIZER_FILE)
    reused = existing_dataset(ds_dir, exp, sha, tokenizer=tok_dir / TOKENIZER_FILE)
    assert reused is not None and reused.info["fingerprint"] == ds.info["fingerprint"]
    assert len(reused.train) == len(ds.train) > 0

    # other texts: neither is reused, and the dataset's fingerprint (the training runs' input) differs
    other = texts[:1]
    other_sha = sha256_joined(other)
    assert existing_tokenizer(tok_dir, exp, other_sha) is None
    assert existing_dataset(ds_dir, exp, other_sha, tokenizer=tok_dir / TOKENIZER_FILE) is None
    ds_other = build_dataset(other, exp, tmp_path / "dataset-other", tokenizer=tok_dir / TOKENIZER_FILE)
    assert ds_other.info["fingerprint"] != ds.info["fingerprint"]

    # other settings: the leak (train_on: all) makes another tokenizer
    leak = _experiment(books, train_on="all")
    assert existing_tokenizer(tok_dir, leak, sha) is None

    # another tokenizer file under the same texts: the dataset is re-encoded
    build_tokenizer(texts, leak, tmp_path / "tokenizer-leak")
    assert existing_dataset(ds_dir, exp, sha, tokenizer=tmp_path / "tokenizer-leak" / TOKENIZER_FILE) is None


def test_streamed_paragraphs_and_chunks_equal_the_joined_string_split():
    import random

    from distillery_assets.thyme.dataset import chunk_text, iter_chunks, iter_paragraphs

    rng = random.Random(7)
    for _ in range(300):
        docs = ["".join(rng.choice("ab \n") for _ in range(rng.randrange(0, 30))) for _ in range(rng.randrange(0, 6))]
        joined = "\n\n".join(docs)
        assert list(iter_paragraphs(docs)) == (joined.split("\n\n") if docs else [])
        for size, floor in ((5, 0), (12, 3)):
            assert list(iter_chunks(iter_paragraphs(docs), size, floor)) == (chunk_text(joined, size, floor) if docs else [])


def test_the_spooled_build_keeps_the_seed_split_and_leaves_no_spool(books, tmp_path):
    import numpy as np

    from distillery_assets.thyme.dataset import chunk_text, open_dataset, split_chunks

    exp = _experiment(books)
    write_corpus(iter_sources(exp.corpus), tmp_path / "c")
    texts = [d.text for d in read_corpus(tmp_path / "c")]
    ds = build_dataset(iter(texts), exp, tmp_path / "ds")  # a generator: consumed once, never listed
    chunks = chunk_text("\n\n".join(texts), exp.dataset.chunk_chars, exp.dataset.min_chunk_chars)
    train, val = split_chunks(chunks, exp.dataset.val_fraction, exp.dataset.split_seed)
    assert ds.val_chunks() == val and ds.info["train"]["chunks"] == len(train) and ds.info["chunks"] == len(chunks)
    tok = ds.tokenizer()
    first = [2, *tok.encode(train[0], add_special_tokens=False).ids, 3]
    assert np.asarray(ds.train.tokens[: len(first)]).tolist() == first  # the training file starts with train[0]
    assert not list((tmp_path / "ds").glob("*.spool")) and open_dataset(tmp_path / "ds").info == ds.info


# Issue 25: local books are cut by the seed's loader and chunks packed as the seed packed them. What was built
# before must not be reused for the new data; what those changes do not touch keeps its key.
PRE_25_CORPUS_KEYS = {"distillery": "dbef44d43808e253", "corpus-seed": "73dfa8c7c4f45dda"}  # platform_paths={}


def test_the_local_cut_enters_local_corpus_keys_only(books, monkeypatch):
    import distillery_assets.thyme.corpus as C

    local = _experiment(books).corpus
    keys = {name: source_key(load_experiment(name).corpus, platform_paths={}) for name in PRE_25_CORPUS_KEYS}
    before = source_key(local)
    assert keys == PRE_25_CORPUS_KEYS  # platform and Hub corpora are not rebuilt for issue 25
    monkeypatch.setattr(C, "LOCAL_CUT", "another-rule")
    assert source_key(local) != before  # a corpus of local books cut by another rule is rebuilt
    assert {name: source_key(load_experiment(name).corpus, platform_paths={}) for name in keys} == keys


def test_a_tokenizer_or_dataset_from_the_previous_format_is_not_reused(books, tmp_path, monkeypatch):
    import distillery_assets.thyme.dataset as D

    exp = _experiment(books)
    texts = [d.text for d in iter_sources(exp.corpus) if hasattr(d, "text")]
    sha = sha256_joined(texts)
    monkeypatch.setattr(D, "DATASET_FORMAT", 2)  # as written before issue 25 (blank-line chunk packing)
    build_tokenizer(texts, exp, tmp_path / "tok")
    build_dataset(texts, exp, tmp_path / "ds", tokenizer=tmp_path / "tok" / TOKENIZER_FILE)
    assert existing_dataset(tmp_path / "ds", exp, sha, tokenizer=tmp_path / "tok" / TOKENIZER_FILE) is not None
    monkeypatch.undo()
    assert D.DATASET_FORMAT == 3
    assert existing_tokenizer(tmp_path / "tok", exp, sha) is None
    assert existing_dataset(tmp_path / "ds", exp, sha, tokenizer=tmp_path / "tok" / TOKENIZER_FILE) is None
