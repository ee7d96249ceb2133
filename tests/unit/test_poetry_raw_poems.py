import json

from distillery_assets.poetry.raw_poems import load_poems, read_requests


def _tree(tmp_path):
    good = tmp_path / "good"
    (good / "sub").mkdir(parents=True)
    (good / "a.txt").write_text("Frost on the sill\nthe kettle ticks\n", encoding="utf-8")
    (good / "sub" / "b.txt").write_text("\ufeffA second poem\r\nwith CRLF\r\n", encoding="utf-8")
    (good / "empty.txt").write_text("  \n\n", encoding="utf-8")
    (good / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    lines = [json.dumps({"text": "jsonl poem one"}), "{not json", json.dumps({"poem": "jsonl poem two"}),
             json.dumps({"title": "no text field"}), "", json.dumps({"content": "  "}), json.dumps(["a list"])]
    (good / "more.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (good / "notes.md").write_text("not a poem file", encoding="utf-8")
    return tmp_path


def test_good_files_load_and_bad_input_becomes_rejects_naming_file_and_line(tmp_path):
    poems, rejects = load_poems(_tree(tmp_path), "good")
    texts = [p.text for p in poems]
    assert texts == ["Frost on the sill\nthe kettle ticks", "jsonl poem one", "jsonl poem two",
                     "A second poem\nwith CRLF"]
    assert all(p.quality == "good" for p in poems)
    by_source = {r.source: r.reason for r in rejects}
    assert by_source["good/empty.txt"] == "empty file"
    assert "not UTF-8" in by_source["good/latin1.txt"]
    assert "malformed JSONL" in by_source["good/more.jsonl:2"]
    assert "no string field" in by_source["good/more.jsonl:4"]
    assert "empty" in by_source["good/more.jsonl:6"]
    assert "JSON object" in by_source["good/more.jsonl:7"]
    assert "unsupported file type" in by_source["good/notes.md"]


def test_duplicates_are_rejected_and_missing_folder_is_empty(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_text("roses are red", encoding="utf-8")
    (tmp_path / "bad" / "y.txt").write_text("roses are red\n", encoding="utf-8")
    poems, rejects = load_poems(tmp_path, "bad")
    assert [p.source for p in poems] == ["bad/x.txt"]
    assert rejects[0].source == "bad/y.txt" and "duplicate of bad/x.txt" in rejects[0].reason
    assert load_poems(tmp_path, "good") == ([], [])


def test_requests_skip_comments_and_blanks(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("# comment\n\nWrite about rain\n  Write about bees  \n", encoding="utf-8")
    assert read_requests(f) == ["Write about rain", "Write about bees"]
