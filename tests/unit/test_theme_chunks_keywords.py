"""Chunking and keyword counting (fast counter == the seed's regex loop)."""

import json
from collections import Counter

import pytest

from distillery_assets.paths import repo_root
from distillery_assets.theme import books, chunking, keywords

KEYWORDS_FILE = repo_root() / "data" / "config" / "theme" / "theme_keywords.json"
SHARED = repo_root().parent / "shared" / "reference" / "theme_keywords.json"


def test_keyword_file_is_the_reference_copy():
    data = json.loads(KEYWORDS_FILE.read_text())
    assert len(data) == 16 and sum(map(len, data.values())) == 495
    if SHARED.exists():
        assert KEYWORDS_FILE.read_bytes() == SHARED.read_bytes()


def test_chunks_sizes_ids_overlap():
    paras = [("word " * n).strip() for n in (60, 80, 30, 150, 10, 90, 70, 5)]
    text = "\n\n".join(paras)
    params = chunking.ChunkParams(chunk_size=600, overlap=100, min_chunk_size=50)
    chunks = list(chunking.chunk_book({"id": 7, "title": "T", "text": text}, params))
    assert [c["chunk_id"] for c in chunks] == [f"7-{c['index']}" for c in chunks]
    assert len({c["chunk_id"] for c in chunks}) == len(chunks) >= 3
    for prev, cur in zip(chunks, chunks[1:]):
        assert cur["text"].startswith(prev["text"][-100:].split(" ", 1)[1][:20])  # overlap carried over
    assert all(50 <= c["length"] <= 600 for c in chunks)


def test_long_paragraph_is_cut_and_short_chunks_dropped():
    text = "x" * 10 + "\n\n" + ("abcdefghi " * 300)
    chunks = list(chunking.chunk_text(text, chunking.ChunkParams(1024, 128, 256)))
    assert all(len(c) <= 1024 for _, c in chunks) and all(len(c) >= 256 for _, c in chunks)
    assert "".join(c for _, c in chunks).count("abcdefghi") >= 300


def test_ids_are_stable_when_minimum_changes():
    text = "short\n\n" + "\n\n".join(("para %d " % i) * 40 for i in range(10))
    a = dict(chunking.chunk_text(text, chunking.ChunkParams(500, 0, 0)))
    b = dict(chunking.chunk_text(text, chunking.ChunkParams(500, 0, 300)))
    assert all(a[i] == t for i, t in b.items())


@pytest.fixture(scope="module")
def sets():
    return keywords.load_keyword_sets(KEYWORDS_FILE)


@pytest.fixture(scope="module")
def counter(sets):
    return keywords.KeywordCounter(sets)


TRICKY = [
    "The Revolution! revolutionary, REVOLUTION; the New World and a new  world.",
    "émars mars_ marsé Mars. café-chess chess\u00e9 \u00e9chess chess\u2014war war\u0301 wars",
    "",
    "state" * 3 + " state STATE State",
    "Ünity unity ÜNITY İstate state",  # lower() of İ grows a combining dot
    "new world\nnew world\n\nNEW WORLD",
    "science-fiction science_fiction 1science science1 (science)",
]


@pytest.mark.parametrize("text", TRICKY)
def test_fast_counter_equals_reference_on_tricky_text(text, sets, counter):
    assert counter.count(text) == keywords.count_reference(text, sets)


def test_counts_distinct_per_theme_and_total(sets, counter):
    counts = counter.count("Chess chess CHESS board")
    assert counts["chess"] == keywords.count_reference("chess board", sets)["chess"]
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_fast_counter_equals_reference_on_sample_books(sets, counter):
    selection = books.BookSelection(categories={"x": [624, 33870, 61]})
    batch = books.from_local_dir(repo_root() / "data" / "inputs" / "gutenberg", selection)
    chunks = [c["text"] for r in batch.records for c in chunking.chunk_book(r)][::7][:120]
    fast = counter.count_many(chunks)
    assert fast == [keywords.count_reference(t, sets) for t in chunks]
    assert len({c["total"] for c in fast}) > 3  # a real spread of totals, not all alike


def test_batches_split_across_buffers_same_result(sets):
    small = keywords.KeywordCounter(sets, batch_bytes=64)
    texts = ["chess and power", "", "utopia", "revolution of the state " * 5, "mars"]
    assert small.count_many(texts) == [keywords.count_reference(t, sets) for t in texts]


def test_keywords_with_punctuation_edges_and_unicode():
    sets = {"odd": ["a.i.", "café", "x-ray", "über"]}
    c = keywords.KeywordCounter(sets)
    for text in ["an a.i. here", "a.i.b", "café time", "cafés", "x-ray and über", "xa.i. über_", "the a.i."]:
        assert c.count(text) == keywords.count_reference(text, sets), text


def test_bad_keyword_file_names_file(tmp_path):
    bad = tmp_path / "kw.json"
    bad.write_text('{"chess": ["pawn", ""]}')
    with pytest.raises(keywords.KeywordConfigError, match="kw.json: theme 'chess' keyword #1"):
        keywords.load_keyword_sets(bad)


def test_histogram():
    assert keywords.histogram([0, 1, 1, 12, 10], cap=10) == {"0": 1, "1": 2, ">=10": 2}


def test_chunk_books_streams_every_book_and_counts_per_book():
    params = chunking.ChunkParams(chunk_size=300, overlap=0, min_chunk_size=10)
    book_list = [{"id": 1, "text": "\n\n".join(["word " * 40] * 5)}, {"id": 2, "text": "short words here"}]
    per_book: Counter = Counter()
    chunks = list(chunking.chunk_books(iter(book_list), params, per_book))
    assert chunks == [c for b in book_list for c in chunking.chunk_book(b, params)]
    assert per_book == {1: sum(c["source_id"] == 1 for c in chunks), 2: 1} and per_book[1] > 1


def test_chunk_filter_keeps_the_same_rows_as_counting_each_one():
    sets = keywords.load_keyword_sets(KEYWORDS_FILE)
    counter = keywords.KeywordCounter(sets)
    words = [w for ws in sets.values() for w in ws]
    rows = [{"chunk_id": f"c{i}", "text": " ".join(words[i * 3:i * 3 + (i % 4)]) + " plain filler"} for i in range(40)]
    kept_filter = keywords.ChunkFilter(counter, min_matches=2, batch_rows=7)  # several batches and a remainder
    kept = list(kept_filter.kept(iter(rows)))
    expected = [{**r, "keyword_counts": counter.count(r["text"])} for r in rows
                if counter.count(r["text"])["total"] >= 2]
    assert kept == expected and 0 < len(kept) < len(rows)
    assert kept_filter.totals == [counter.count(r["text"])["total"] for r in rows]
    assert sum(kept_filter.theme_hits.values()) == sum(sum(1 for t in sets if k["keyword_counts"][t]) for k in kept)
    assert kept_filter.megabytes > 0 and kept_filter.rate_mb_s >= 0
