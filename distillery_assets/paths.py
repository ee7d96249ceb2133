"""Where things live on disk, and the one rule for turning untrusted names into paths.

* ``repo_root()``: the checkout (shipped inputs and configs live under ``data/inputs`` and ``data/config``).
* ``data_dir()``: where everything materialized goes; ``$DISTILLERY_DATA_DIR`` or ``<repo>/data``.
* ``inputs_dir()`` / ``config_dir()``: shipped, editable inputs; overridable for tests and users.
* ``filters_root()``: the filter definitions (``<name>/v<N>/config.yaml`` ...), edited like the config files.
* ``safe_child()``: joins a name read from an input file onto a base directory, refusing absolute
  names, ``..`` and anything else that would land outside that base.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

_REPO_ROOT = Path(__file__).resolve().parents[1]
FILTERS_DIR_ENV = "DISTILLERY_FILTERS_DIR"


class UnsafePathError(ValueError):
    """A name taken from input data would escape the directory it must stay in."""


def repo_root() -> Path:
    return _REPO_ROOT


def data_dir() -> Path:
    """Root of every materialized artefact (created on first use)."""
    root = Path(os.environ.get("DISTILLERY_DATA_DIR") or _REPO_ROOT / "data").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def inputs_dir() -> Path:
    """Shipped sample inputs (books, poems); ``$DISTILLERY_INPUTS_DIR`` overrides."""
    return Path(os.environ.get("DISTILLERY_INPUTS_DIR") or _REPO_ROOT / "data" / "inputs").resolve()


def config_dir() -> Path:
    """Editable configuration files (prompt tables, personas, training profiles)."""
    return Path(os.environ.get("DISTILLERY_CONFIG_DIR") or _REPO_ROOT / "data" / "config").resolve()


def filters_root() -> Path:
    """The folder of shipped/edited filter definitions (``<name>/v<N>/``); ``$DISTILLERY_FILTERS_DIR`` overrides.
    Their outputs go under ``data_dir()/filters`` (:mod:`distillery_assets.filters.paths`)."""
    return Path(os.environ.get(FILTERS_DIR_ENV) or _REPO_ROOT / "data" / "filters").expanduser().resolve()


def safe_child(base: Path, name: str, *, source: str = "input") -> Path:
    """Return ``base / name`` if ``name`` is a plain relative name that stays inside ``base``.

    ``source`` names where the value came from (e.g. ``"prompts.txt line 4"``) so the error says so.
    """
    if not name or not name.strip():
        raise UnsafePathError(f"{source}: empty path name")
    if "\x00" in name:
        raise UnsafePathError(f"{source}: NUL byte in path name {name!r}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\", "~")):
        raise UnsafePathError(f"{source}: absolute path {name!r} is not allowed")
    if ".." in posix.parts or ".." in windows.parts:
        raise UnsafePathError(f"{source}: '..' in path name {name!r} is not allowed")
    base_resolved = base.resolve()
    candidate = (base_resolved / name).resolve()
    if candidate != base_resolved and base_resolved not in candidate.parents:
        raise UnsafePathError(f"{source}: {name!r} resolves outside {base_resolved}")
    return candidate
