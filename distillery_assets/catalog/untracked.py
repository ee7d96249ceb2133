"""Files on disk that no catalogue row knows: what ``catalog verify`` walks, and what ``--repair`` records.

Walked: every folder under the data directory in which the catalogue knows a file (not its sub-folders), and
whole trees given as roots (the corpus root). Left out: names starting with a dot (temporary files of atomic
writes, ``.tmp-...``; hidden files), whatever lies inside a catalogued folder artefact, and the ``skip`` paths
(the catalogue's own files and spool, the LLM cache, Dagster's storage, the folders of edited files).

Each file found is given the asset (and partition) of its catalogued siblings: the nearest catalogued files
with the same suffix inside the folder or tree it was found in (several assets there: none is guessed); a
partition that differs among them is taken from the catalogued files of its own folder when they agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Known:
    """One catalogued path (its newest row)."""

    path: Path  # absolute
    asset_key: str
    partition: str | None
    kind: str  # "file" | "dir"


@dataclass(frozen=True)
class Untracked:
    path: Path
    asset_key: str | None  # inferred from its siblings; None: no guess
    partition: str | None
    note: str  # how the asset was inferred, or why not


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _files(folder: Path, *, recursive: bool, skip: Sequence[Path], known_dirs: set[Path]) -> Iterable[Path]:
    if not folder.is_dir():
        return
    if not recursive:
        for entry in sorted(folder.iterdir()):
            if not entry.name.startswith(".") and entry.is_file():
                yield entry
        return
    for here, dirs, names in os.walk(folder):
        base = Path(here)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (base / d) not in known_dirs
                         and not _inside(base / d, skip))
        for name in sorted(names):
            if not name.startswith("."):
                yield base / name


def find_untracked(known: Sequence[Known], *, folders: Iterable[Path], trees: Iterable[Path],
                   skip: Sequence[Path]) -> list[Untracked]:
    """Files in ``folders`` (their own files) and ``trees`` (everything below) that no ``known`` path covers."""
    known_files = {k.path for k in known if k.kind != "dir"}
    known_dirs = {k.path for k in known if k.kind == "dir"}
    found: dict[Path, Path] = {}  # file -> the folder or tree it was found in
    for root, recursive in [*((Path(f), False) for f in folders), *((Path(t), True) for t in trees)]:
        if _inside(root, skip) or _inside(root, known_dirs):
            continue
        for path in _files(root, recursive=recursive, skip=skip, known_dirs=known_dirs):
            if path in known_files or path in found or _inside(path, skip) or _inside(path.parent, known_dirs):
                continue
            found[path] = root
    produced = [k for k in known if k.kind != "dir"]
    return [_infer(path, root, produced) for path, root in sorted(found.items())]


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    return len(os.path.commonprefix([a, b]))  # element-wise on any sequences, path parts here


def _infer(path: Path, root: Path, known: Sequence[Known]) -> Untracked:
    folder = path.parent.parts
    floor = len(root.parts)  # siblings must lie in the folder or tree the file was found in
    same_folder = [k for k in known if k.path.parent == path.parent]
    candidates = [(c, k) for k in known if k.path.suffix == path.suffix
                  for c in [_common(folder, k.path.parent.parts)] if c >= floor]
    if candidates:
        best = max(c for c, _ in candidates)
        nearest = [k for c, k in candidates if c == best]
        basis = f"{len(nearest)} catalogued {path.suffix or 'suffix-less'} file(s) nearby"
    else:
        nearest, basis = same_folder, f"{len(same_folder)} catalogued file(s) in its folder"
    if not nearest:
        return Untracked(path, None, None, "asset unknown: no catalogued sibling")
    assets = sorted({k.asset_key for k in nearest})
    if len(assets) > 1:
        return Untracked(path, None, None, f"asset unknown: siblings of {', '.join(assets)}")
    partitions = {k.partition for k in nearest if k.asset_key == assets[0]}
    if len(partitions) > 1:
        partitions = {k.partition for k in same_folder}
        if len(partitions) != 1:
            return Untracked(path, assets[0], None, f"partition unknown: {basis} disagree")
    return Untracked(path, assets[0], partitions.pop(), f"asset from {basis}")
