"""Gutenberg book reading: markers, encodings, bad files, the cutoff rule, the three sources."""

import http.server
import threading
from pathlib import Path

import pytest

from distillery_assets.paths import repo_root
from distillery_assets.theme import books

SEL = books.BookSelection(categories={"a": [1, 2], "b": [3, 2]}, max_year=1969,
                          known_authors=frozenset({"ann author"}))
BODY = "Chapter one.\n\nIt was a collective dream of the future, published 1901 in London.\n"


def wrapped(style="THE", body=BODY, title="A Book"):
    return (f"The Project Gutenberg eBook of {title}\n\nTitle: {title}\nAuthor: Ann Author\n\n"
            f"*** START OF {style} PROJECT GUTENBERG EBOOK {title.upper()} ***\n\n{body}\n"
            f"*** END OF {style} PROJECT GUTENBERG EBOOK {title.upper()} ***\n\nLicence text here, many words.\n")


@pytest.mark.parametrize("style", ["THE", "THIS"])
def test_strip_both_marker_styles(style):
    out = books.strip_gutenberg(wrapped(style))
    assert out.text.startswith("Chapter one.") and out.text.rstrip().endswith("in London.")
    assert "Licence" not in out.text and "Title:" not in out.text and out.warning is None
    assert books.header_fields(out.header) == {"title": "A Book", "author": "Ann Author"}


def test_marker_without_space_wrapped_onto_next_line():
    text = "Head\n***START OF THE PROJECT GUTENBERG EBOOK SONGS OF\nINNOCENCE ***\nBody line.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nfoot"
    assert books.strip_gutenberg(text).text == "Body line."


def test_no_markers_kept_whole_with_warning():
    out = books.strip_gutenberg("Just a text\n\nwith no markers.")
    assert out.text == "Just a text\n\nwith no markers." and "no Project Gutenberg" in out.warning


def test_legacy_master_file_footer_is_cut():
    out = books.strip_gutenberg("Chess text.\n\nMore.\n\nEnd of Project Gutenberg's Chess Fundamentals, by X\n")
    assert out.text == "Chess text.\n\nMore." and "no START" in out.warning


def test_decode_bom_crlf():
    assert books.decode_book("\ufeffa\r\nb\r\n".encode("utf-8"), "x") == "a\nb\n"


@pytest.mark.parametrize("data,reason", [(b"", "empty"), (b"  \n\n", "empty"), (b"ab\x00\x01cd", "binary"),
                                         ("caf\u00e9".encode("latin-1"), "not UTF-8")])
def test_decode_errors_name_the_file(data, reason):
    with pytest.raises(books.BookError, match=rf"/books/pg9.txt: .*{reason}"):
        books.decode_book(data, "/books/pg9.txt")


def test_local_dir_bad_books_rejected_others_go_through(tmp_path):
    (tmp_path / "pg1.txt").write_text(wrapped(title="Good"), encoding="utf-8")
    (tmp_path / "pg2.txt").write_bytes(b"\xff\xfe\x00b\x00a\x00d")  # UTF-16 / binary
    (tmp_path / "pg3.txt").write_bytes(b"")
    batch = books.from_local_dir(tmp_path, SEL, [1, 2, 3, 4])
    assert [r["id"] for r in batch.records] == [1]
    reasons = {r.book_id: r.reason for r in batch.rejects}
    assert str(tmp_path / "pg2.txt") in reasons[2] and "binary" in reasons[2]
    assert str(tmp_path / "pg3.txt") in reasons[3] and "empty" in reasons[3]
    assert batch.missing == [4]
    rec = batch.records[0]
    assert rec["title"] == "Good" and rec["pub_year"] == 1901 and rec["method"] == "local" and rec["category"] == "a"
    assert rec["length"] == len(rec["text"])


def test_cutoff_rule():
    assert books.temporal_verdict(1970, "x", SEL)[0] is False
    assert books.temporal_verdict(1969, "x", SEL)[0] is False
    assert books.temporal_verdict(1968, "x", SEL) == (True, None)
    assert books.temporal_verdict(None, "Ann Author", SEL) == (True, None)
    ok, warning = books.temporal_verdict(None, "Someone Else", SEL)
    assert ok and "unknown" in warning


def test_too_recent_book_rejected(tmp_path):
    (tmp_path / "pg1.txt").write_text(wrapped(body="Copyright 1975 by the author.\n\nText."), encoding="utf-8")
    batch = books.from_local_dir(tmp_path, SEL, [1])
    assert not batch.records and "1975" in batch.rejects[0].reason


def test_shipped_sample_all_books_load():
    sample = repo_root() / "data" / "inputs" / "gutenberg"
    selection = books.load_selection(repo_root() / "data" / "config" / "theme" / "books.json")
    batch = books.from_local_dir(sample, selection)
    assert sorted(r["id"] for r in batch.records) == [32, 35, 61, 62, 624, 33870] and not batch.rejects
    for r in batch.records:
        assert "PROJECT GUTENBERG" not in r["text"].upper()[:3000] and "\r" not in r["text"]
        assert not r["text"].startswith("\ufeff")


def test_rows_source_dedupes_and_reports_missing():
    rows = [{"id": "PG1", "text": wrapped()}, {"id": "1", "text": wrapped()}, {"id": "3", "text": ""}, {"id": "9", "text": "x"}]
    batch = books.from_rows(rows, SEL, "hf", "ds", [1, 2, 3])
    assert [r["id"] for r in batch.records] == [1] and batch.missing == [2]
    assert "empty" in batch.rejects[0].reason


def test_mirror_source_over_real_http(tmp_path):
    root = tmp_path / "mirror"
    (root / "files" / "1").mkdir(parents=True)
    (root / "files" / "1" / "1-0.txt").write_text(wrapped(title="Mirrored"), encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        batch = books.from_mirror(f"http://127.0.0.1:{server.server_address[1]}", SEL, [1, 2])
    finally:
        server.shutdown()
    assert [r["title"] for r in batch.records] == ["Mirrored"] and batch.records[0]["method"] == "mirror"
    assert batch.missing == [2]


def test_selection_file_errors(tmp_path):
    bad = tmp_path / "books.json"
    bad.write_text('{"categories": {"x": [1, "two"]}}')
    with pytest.raises(books.BookError, match="books.json: categories.x"):
        books.load_selection(bad)


def test_unsafe_ids_cannot_make_paths(tmp_path):
    assert books.dedupe([{"id": 1}, {"id": 1}, {"id": 2}]).__next__()["id"] == 1
    assert Path(books.safe_child(tmp_path, "pg1.txt")).parent == tmp_path.resolve()


def test_credit_paragraph_and_old_closing_line_removed():
    body = ("Produced by A. Volunteer and the Online Team\n\n\n\nTHE TITLE\n\nText of the book.\n\n\n"
            "End of the Project Gutenberg EBook of The Title, by Someone\n")
    out = books.strip_gutenberg(wrapped("THIS", body=body))
    assert out.text == "THE TITLE\n\nText of the book."


def test_load_books_dispatches_on_source_and_names_bad_sources(tmp_path, monkeypatch):
    (tmp_path / "gutenberg").mkdir()
    (tmp_path / "gutenberg" / "pg1.txt").write_text(wrapped(), encoding="utf-8")
    monkeypatch.setenv("DISTILLERY_INPUTS_DIR", str(tmp_path))
    batch = books.load_books("local", SEL, [1, 2])  # default folder: inputs_dir()/gutenberg
    assert [r["id"] for r in batch.records] == [1] and batch.missing == [2]
    assert [r["id"] for r in books.load_books("local", SEL, [1], local_dir=tmp_path / "gutenberg").records] == [1]
    with pytest.raises(books.BookError, match="source 'mirror' needs mirror_url"):
        books.load_books("mirror", SEL, [1])
    with pytest.raises(books.BookError, match="unknown books source 'ftp'; use local, hf or mirror"):
        books.load_books("ftp", SEL, [1])
