"""Atomic writes leave the old file or the new file, never a partial one; JSONL errors name file and line."""

from pathlib import Path

import pytest

from distillery_assets.io import JsonlError, atomic_path, atomic_write_jsonl, atomic_write_text, iter_jsonl


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path: Path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second", durable=False)
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_failure_inside_the_block_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "complete old content")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed midway")
    assert target.read_text() == "complete old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_target_is_swapped_whole(tmp_path: Path):
    target = tmp_path / "adapter"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.bin").write_bytes(b"1")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "b.bin").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == ["b.bin"]
    assert target.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_jsonl_round_trip_and_bad_lines_are_reported_with_line_numbers(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    assert atomic_write_jsonl(path, [{"a": 1}, {"text": "é"}]) == 2
    assert "é" in path.read_text(encoding="utf-8")  # not ASCII-escaped
    path.write_bytes(path.read_bytes() + b"\n[1, 2]\n{broken\n\xff\xfe\n")
    rows = list(iter_jsonl(path, on_error="yield"))
    assert [n for n, r in rows if isinstance(r, dict)] == [1, 2]
    errors = [r for _, r in rows if isinstance(r, JsonlError)]
    assert [e.line for e in errors] == [4, 5, 6]
    assert all(str(path) in str(e) for e in errors)
    with pytest.raises(JsonlError, match=r"records\.jsonl:4"):
        list(iter_jsonl(path))
