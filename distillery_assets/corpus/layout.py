"""Where the corpus lives: ``<root>/stories/<group>/`` and ``<root>/encyclopedia/<category>/<subcategory>/``.

The root is ``$DISTILLERY_CORPUS_ROOT`` when set (so users can point the platform at the corpus they already
have), else ``data_dir()/corpus``; an explicit override (asset config) wins over both.
"""

from __future__ import annotations

import os
import time
from enum import Enum
from pathlib import Path

from distillery_assets.io.atomic import TMP_PREFIX
from distillery_assets.paths import data_dir, safe_child

CORPUS_ROOT_ENV = "DISTILLERY_CORPUS_ROOT"
PROMPTS_FILE = "prompts.txt"
CORPUS_SUFFIX = ".corpus"

# A .corpus file is written as ".tmp-<name>-<pid>-<thread>-<n>" beside it first (io.atomic), so its name must
# leave this much room below the filesystem's limit on one name (NAME_MAX: 255 bytes on ext4, xfs, btrfs, APFS).
TEMP_NAME_ROOM = 48
NAME_MAX_DEFAULT = 255
PATH_MAX_DEFAULT = 4096
# Names Windows (and so SMB shares, exFAT/NTFS drives) refuses whatever the extension; a corpus is copied around.
RESERVED_STEMS = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{p}{n}" for p in ("COM", "LPT") for n in "0123456789¹²³")})
NOT_PORTABLE_CHARS = '<>:"|?*'


class CorpusKind(str, Enum):
    """The two halves of the corpus; the value is the top-level directory name."""

    STORIES = "stories"
    ENCYCLOPEDIA = "encyclopedia"


def corpus_root(override: str | os.PathLike | None = None) -> Path:
    """The corpus root directory (created if missing)."""
    chosen = override or os.environ.get(CORPUS_ROOT_ENV) or data_dir() / "corpus"
    root = Path(chosen).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def partition_dir(root: Path, kind: CorpusKind, key: str) -> Path:
    """``<root>/<kind>/<key>``; the key comes from the tables, so it still goes through ``safe_child``."""
    return safe_child(root / kind.value, key, source=f"{kind.value} partition key")


def _pathconf(directory: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(directory, name)
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), a missing folder, an unknown name
        return default
    return value if value and value > 0 else default


def name_limits(directory: Path) -> tuple[int, int]:
    """The longest ``.corpus`` file name (bytes) and the longest full path (bytes) the filesystem of
    ``directory`` accepts for a file written atomically there (room left for the temporary name)."""
    return (_pathconf(directory, "PC_NAME_MAX", NAME_MAX_DEFAULT) - TEMP_NAME_ROOM,
            _pathconf(directory, "PC_PATH_MAX", PATH_MAX_DEFAULT) - TEMP_NAME_ROOM)


def stale_temp_files(directory: Path, *, min_age_s: float = 600.0) -> list[Path]:
    """Temporary siblings of ``.corpus`` files left behind by a killed run (older than ``min_age_s``)."""
    if not directory.is_dir():
        return []
    cutoff = time.time() - min_age_s
    return sorted(
        p
        for p in directory.rglob(f"{TMP_PREFIX}*{CORPUS_SUFFIX}-*")
        if p.is_file() and p.stat().st_mtime < cutoff
    )
