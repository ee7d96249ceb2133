"""prompts.txt parsing, bad-line rejection with file and line, and the missing/existing split."""

from pathlib import Path

import pytest

from distillery_assets.corpus.layout import CorpusKind, corpus_root, partition_dir, stale_temp_files
from distillery_assets.corpus.plan import scan_partition
from distillery_assets.corpus.prompts_file import CorpusTask, parse_line, parse_prompts_file
from distillery_assets.rejects import Reject


def test_parse_good_line(tmp_path):
    task = parse_line("cats.corpus Write about cats. Aim for 10 words.", tmp_path, "p.txt line 1")
    assert isinstance(task, CorpusTask)
    assert task.path == tmp_path.resolve() / "cats.corpus"
    assert task.prompt == "Write about cats. Aim for 10 words."


@pytest.mark.parametrize(
    "line, reason",
    [
        ("nospace.corpus", "no space after the file name"),
        ("cats.txt Write about cats.", "does not end in '.corpus'"),
        ("sub/cats.corpus Write.", "path separator"),
        ("../cats.corpus Write.", "path separator"),
        ("/etc/cats.corpus Write.", "path separator"),
        ("..\\cats.corpus Write.", "path separator"),
        ("~cats.corpus Write.", "absolute path"),
        ("C:cats.corpus Write.", "absolute path"),
        (".corpus Write.", "does not end in '.corpus'"),
        ("cats.corpus    ", "no space after the file name"),
        ("cats.corpus\tWrite.", "wrong separator: the file name is followed by a tab"),
        ("cats.corpus\u00a0Write about cats.", "wrong separator: the file name is followed by a no-break space"),
        ("..dotdot.corpus Write.", "starts with '.': a hidden file"),
        (".cats.corpus Write.", "hidden file"),
        ("x" * 250 + ".corpus Write.", "too long for the filesystem: 257 bytes, at most 207"),
        ("é" * 110 + ".corpus Write.", "too long for the filesystem: 227 bytes"),  # bytes, not characters
        ("CON.corpus Write.", "reserved device name on Windows (CON)"),
        ("lpt1.notes.corpus Write.", "reserved device name on Windows (LPT1)"),
        ("what?.corpus Write.", "refused by Windows"),
        ("\ufeffcats.corpus Write.", "invisible or control character, U+FEFF"),
        ("ca\x07ts.corpus Write.", "invisible or control character, U+0007"),
    ],
)
def test_bad_lines_are_rejected_with_source_and_reason(tmp_path, line, reason):
    got = parse_line(line, tmp_path, "x/prompts.txt line 7")
    assert isinstance(got, Reject)
    assert got.source == "x/prompts.txt line 7"
    assert reason in got.reason


def test_bad_lines_do_not_stop_the_rest(tmp_path):
    leaf = tmp_path / "enc" / "cat" / "sub"
    leaf.mkdir(parents=True)
    prompts = leaf / "prompts.txt"
    prompts.write_text(
        "a.corpus First prompt.\n"
        "broken-line-without-space\n"
        "\n"
        "../escape.corpus Sneaky.\n"
        "b.corpus Second prompt.\n"
        "a.corpus Duplicate name.\n"
    )
    read = parse_prompts_file(prompts)
    tasks, rejects = read.tasks, read.rejects
    assert [t.file for t in tasks] == ["a.corpus", "b.corpus"]
    assert [r.source for r in rejects] == [f"{prompts} line 2", f"{prompts} line 4", f"{prompts} line 6"]
    assert "already listed at line 1" in rejects[2].reason


def test_a_byte_order_mark_is_removed_with_a_warning_and_utf16_is_one_reject(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"\xef\xbb\xbfa.corpus First.\nb.corpus Second.\n")
    read = parse_prompts_file(prompts)
    assert [t.file for t in read.tasks] == ["a.corpus", "b.corpus"] and read.rejects == []
    assert read.warnings == [f"{prompts}: removed the UTF-8 byte-order mark at the start of the file (an editor "
                             "added it; the file names are read without it)"]
    prompts.write_text("a.corpus First.\n", encoding="utf-16")
    read = parse_prompts_file(prompts)
    assert read.tasks == [] and [str(r) for r in read.rejects] == [
        f"{prompts} line 1: the file is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"]


def test_a_name_the_filesystem_cannot_check_is_a_reject_not_a_stop(tmp_path):
    leaf = tmp_path / "cat" / "sub"
    leaf.mkdir(parents=True)
    (leaf / "prompts.txt").write_text("a.corpus A.\nfolder.corpus F.\nb.corpus B.\n")
    (leaf / "folder.corpus").mkdir()
    plan = scan_partition(tmp_path / "cat")
    assert [t.file for t in plan.pending] == ["a.corpus", "b.corpus"]
    assert [str(r) for r in plan.rejects] == [
        f"{leaf / 'prompts.txt'} line 2: 'folder.corpus' exists and is not a regular file (a folder?)"]


def test_non_utf8_single_line_file_is_one_reject_naming_its_line(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a.corpus caf\xe9\n")
    read = parse_prompts_file(prompts)
    tasks, rejects = read.tasks, read.rejects
    assert tasks == [] and "not UTF-8" in rejects[0].reason and rejects[0].source == f"{prompts} line 1"


def test_one_non_utf8_byte_costs_only_its_line(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(
        "a.corpus Café au lait.\n".encode()
        + b"b.corpus Bad \xff byte here.\r\n"
        + b"\n"
        + b"c.corpus Third prompt.\r\n"
        + b"d.corpus Also bad \xfe\xfe.\n"
        + b"e.corpus Last, no newline."
    )
    read = parse_prompts_file(prompts)
    tasks, rejects = read.tasks, read.rejects
    assert [t.file for t in tasks] == ["a.corpus", "c.corpus", "e.corpus"]
    assert tasks[0].prompt == "Café au lait." and tasks[1].prompt == "Third prompt."
    assert [t.source for t in tasks] == [f"{prompts} line 1", f"{prompts} line 4", f"{prompts} line 6"]
    assert [r.source for r in rejects] == [f"{prompts} line 2", f"{prompts} line 5"]
    assert all("not UTF-8" in r.reason for r in rejects)
    assert "invalid start byte at byte 14 of the line" in rejects[0].reason
    assert str(rejects[0]).startswith(f"{prompts} line 2: not UTF-8")


def test_scan_partition_splits_existing_and_pending_in_sorted_order(tmp_path):
    for sub in ("zeta", "alpha"):
        d = tmp_path / "cat" / sub
        d.mkdir(parents=True)
        (d / "prompts.txt").write_text(f"{sub}_1.corpus P1\n{sub}_2.corpus P2\nbad line\n")
    (tmp_path / "cat" / "alpha" / "alpha_2.corpus").write_text("done\n")
    plan = scan_partition(tmp_path / "cat")
    assert [t.file for t in plan.pending] == ["alpha_1.corpus", "zeta_1.corpus", "zeta_2.corpus"]
    assert [t.file for t in plan.existing] == ["alpha_2.corpus"]
    assert len(plan.rejects) == 2 and plan.total == 4
    assert scan_partition(tmp_path / "missing").prompt_files == []


def test_corpus_root_env_and_override(data_dir, tmp_path, monkeypatch):
    assert corpus_root() == data_dir / "corpus"
    monkeypatch.setenv("DISTILLERY_CORPUS_ROOT", str(tmp_path / "theirs"))
    assert corpus_root() == (tmp_path / "theirs").resolve()
    assert corpus_root(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert partition_dir(corpus_root(), CorpusKind.STORIES, "200-400w") == (tmp_path / "theirs" / "stories" / "200-400w").resolve()


def test_stale_temp_files_are_found_only_when_old(tmp_path):
    import os
    import time

    fresh = tmp_path / ".tmp-a.corpus-xyz"
    old = tmp_path / ".tmp-b.corpus-abc"
    fresh.write_text("x")
    old.write_text("x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert stale_temp_files(tmp_path) == [old]


def test_an_empty_corpus_file_counts_as_missing(tmp_path):
    leaf = tmp_path / "cat" / "sub"
    leaf.mkdir(parents=True)
    (leaf / "prompts.txt").write_text("a.corpus Prompt A.\nb.corpus Prompt B.\n")
    (leaf / "a.corpus").write_text("")  # what a power loss can leave of a renamed, unflushed file
    (leaf / "b.corpus").write_text("Done.\n")
    plan = scan_partition(tmp_path / "cat")
    assert [t.file for t in plan.pending] == ["a.corpus"] and [t.file for t in plan.existing] == ["b.corpus"]
