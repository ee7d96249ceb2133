"""Thyme corpus and dataset: the seed's cleaning, minimum lengths and drops with reasons, the Hub sources
on rows the test makes (nothing reaches the Hub), the seed's split of the eight books, tokens on disk."""

import json

import numpy as np
import pytest

from distillery_assets.thyme import corpus as C
from distillery_assets.thyme.dataset import (
    build_dataset, chunk_text, cover_windows, open_dataset, seed_windows, split_chunks,
)
from distillery_assets.thyme.experiments import (
    CorpusRecipe, Experiment, HubGutenbergSource, HubWikipediaSource, LocalSource, load_experiment,
)

BOOK = ("Header\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\n\r\n\r\nChapter  1\t\tIt  was.\r\n\r\n"
        + "A line of the book.\r\n" * 700 + "\r\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nLicence text")


def test_hub_cleaning_cuts_whole_marker_lines():
    text = C.clean_book(BOOK)
    assert text.startswith("Chapter 1 It was.\n\nA line") and text.endswith("A line of the book.")
    assert "\r" not in text and "\n\n\n" not in text and "Licence" not in text and "Header" not in text


def test_local_cleaning_is_the_seeds_load_books():
    text = C.clean_local_book(BOOK)  # the rest of the START line stays, as in train_books.load_books
    assert text.startswith("THE PROJECT GUTENBERG EBOOK X ***\n\nChapter 1 It was.\n\nA line")
    assert text.endswith("A line of the book.") and "Licence" not in text and "Header" not in text
    cut = C.seed_strip_markers
    assert cut("head***START OF it\nbody *** END OF x") == " it\nbody "
    assert cut("a *** START OF b ***START OF c") == " b ***START OF c"  # the list's first marker found wins
    # "End of Project Gutenberg" cuts only where neither END OF marker occurs, even if it comes first
    assert cut("body End of Project Gutenberg's x\n*** END OF y") == "body End of Project Gutenberg's x\n"
    assert cut("body\nEnd of Project Gutenberg's x") == "body\n"
    assert cut("no markers") == "no markers"


def _recipe(**over):
    return CorpusRecipe(sources=[LocalSource(kind="local")], **over)


def test_local_folder_drops_bad_books_with_reasons_and_keeps_the_rest(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "good.txt").write_text(BOOK, encoding="utf-8")
    (books / "empty.txt").write_bytes(b"")
    (books / "binary.txt").write_bytes(b"\x00\x01\x02" * 5000)
    (books / "latin1.txt").write_bytes(("caf\xe9 " * 5000).encode("latin-1"))
    (books / "short.txt").write_text("too short", encoding="utf-8")
    (books / "thin.txt").write_text("x" * 12_000 + "\n*** START OF Y ***\n" + "tiny" * 10, encoding="utf-8")
    items = list(C.iter_local(LocalSource(kind="local", path=str(books)), _recipe()))
    kept = [i for i in items if isinstance(i, C.Document)]
    drops = {i.source: i.reason for i in items if isinstance(i, C.Drop)}
    assert [d.name for d in kept] == ["good"]
    assert "empty.txt: empty file" in drops["local:empty.txt"]
    assert "binary.txt: binary file" in drops["local:binary.txt"]
    assert "latin1.txt: not UTF-8" in drops["local:latin1.txt"]
    assert "under min_book_chars=10,000" in drops["local:short.txt"]
    assert "under min_clean_chars=5,000" in drops["local:thin.txt"]


def test_write_corpus_is_atomic_and_nothing_left_is_an_error(tmp_path):
    out = tmp_path / "corpus"
    with pytest.raises(C.CorpusError, match="no document left after cleaning"):
        C.write_corpus([C.Drop("local:a.txt", "empty file")], out)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing partial on disk
    stats = C.write_corpus([C.Drop("x", "why"), C.Document("a", "local:a.txt", "héllo")], out)
    assert (stats.documents, stats.dropped, stats.characters, stats.bytes) == (1, 1, 5, 6)
    assert [d.text for d in C.read_corpus(out)] == ["héllo"]
    assert json.loads((out / "drops.jsonl").read_text())["reason"] == "why"


def test_hub_sources_stream_with_the_seeds_names(monkeypatch):
    calls = []

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        if args[0] == "manu/project_gutenberg":
            return iter([{"id": "1", "text": BOOK}, {"id": "2", "text": "short"}, {"id": "3", "text": BOOK}])
        return iter([{"id": "9", "title": "Thyme", "text": "Thyme is a herb. " * 40, "url": "u"},
                     {"id": "10", "title": "Stub", "text": "tiny"}])

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    recipe = _recipe()
    books = list(C.iter_hf_gutenberg(HubGutenbergSource(kind="hf_gutenberg", max_books=1), recipe))
    assert calls[0] == (("manu/project_gutenberg",), {"split": "en", "streaming": True})
    assert [type(i).__name__ for i in books] == ["Document"]  # stops after max_books kept
    assert books[0].text.startswith("Chapter 1")
    arts = list(C.iter_hf_wikipedia(HubWikipediaSource(kind="hf_wikipedia"), recipe))
    assert calls[1] == (("wikipedia", "20220301.en"), {"split": "train", "streaming": True})
    assert arts[0].text.startswith("# Thyme\n\nThyme is a herb.")
    assert isinstance(arts[1], C.Drop) and "under min_article_chars=500" in arts[1].reason
    books = list(C.iter_hf_gutenberg(HubGutenbergSource(kind="hf_gutenberg"), recipe))
    assert [type(i).__name__ for i in books] == ["Document", "Drop", "Document"]


def test_shipped_books_match_their_manifest():
    folder = C.REPO_ROOT / "data/inputs/thyme_books"
    manifest = C.read_manifest(folder)
    assert len(manifest) == 8
    from distillery_assets.io.hashing import sha256_file

    for name, row in manifest.items():
        assert sha256_file(folder / name) == row["sha256"], name


def test_books_seed_split_is_the_seeds():
    exp = load_experiment("books-seed")
    docs = [i for i in C.iter_sources(exp.corpus) if isinstance(i, C.Document)]
    assert [d.name for d in docs] == sorted(d.name for d in docs) and len(docs) == 8
    chunks = chunk_text("\n\n".join(d.text for d in docs), 500)
    train, val = split_chunks(chunks, 0.1, 42)
    # the seed's figures (test_thyme_seed_data.py derives them from a transcription of the seed's functions)
    assert (len(chunks), len(train), len(val)) == (8015, 7213, 802)
    legacy = list(chunks)
    np.random.seed(42)
    np.random.shuffle(legacy)  # the seed's own call
    assert train + val == legacy


def test_windows():
    assert seed_windows(100, 128, 64, 11) == [(0, 100)]
    assert seed_windows(300, 128, 64, 11) == [(0, 129), (64, 193), (128, 257)]
    assert seed_windows(8, 128, 64, 11) == []
    cover = cover_windows(300, 128, 64)
    assert cover == [(0, 129, 1), (64, 193, 129), (128, 257, 193), (192, 300, 257)]
    assert sum(e - f for _, e, f in cover) == 299  # every target once


def test_dataset_on_disk_counts_and_memmap(tmp_path):
    exp = load_experiment("books-cpu")
    text = C.clean_book(BOOK).replace("\n", "\n\n")
    exp = Experiment.model_validate({**exp.model_dump(exclude={"name"}),
                                     "tokenizer": {"vocab_size": 60, "min_frequency": 1}})
    ds = build_dataset([text, "A new paragraph about thyme.\n\n" * 40], exp, tmp_path / "ds")
    again = open_dataset(tmp_path / "ds")
    assert isinstance(again.train.tokens, np.memmap)
    assert again.info["train"]["chunks"] + again.info["val"]["chunks"] == again.info["chunks"]
    assert int(again.train.tokens[0]) == 2 and ds.tokenizer().token_to_id("<PAD>") == 0
    assert ds.train.scored_tokens == again.info["train"]["tokens"] - again.info["train"]["chunks"]
    ex = ds.train.examples()[0]
    assert ex.input_ids[0] == 2 and ex.input_ids == ex.labels
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
