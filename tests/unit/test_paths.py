"""Names read from input files never become paths outside their base directory."""

from pathlib import Path

import pytest

from distillery_assets.paths import UnsafePathError, safe_child


@pytest.mark.parametrize("name", ["../x.corpus", "a/../../x", "/etc/passwd", "C:\\x", "\\\\server\\share", "~/x",
                                  "", "  ", "a\x00b", "..\\x"])
def test_unsafe_names_are_rejected_with_their_source(tmp_path: Path, name: str):
    with pytest.raises(UnsafePathError, match="prompts.txt line 7"):
        safe_child(tmp_path, name, source="prompts.txt line 7")


def test_symlink_escape_is_rejected(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    (base / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        safe_child(base, "link/file.txt")


def test_plain_relative_names_resolve_inside(tmp_path: Path):
    assert safe_child(tmp_path, "a/b.corpus") == (tmp_path / "a" / "b.corpus").resolve()


def test_data_dir_follows_the_environment(data_dir: Path):
    from distillery_assets import paths

    assert paths.data_dir() == data_dir.resolve()
