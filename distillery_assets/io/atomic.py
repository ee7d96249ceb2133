"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

A reader (or a re-run after a crash) therefore sees either the old complete file or the new complete
file, never a partial one. Temporary files carry a ``.tmp-`` prefix so a sweep can recognise leftovers.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(target: Path, *, is_dir: bool = False, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    Works for files and (``is_dir=True``) whole directories, e.g. a LoRA adapter folder. On any exception
    the temporary is removed and ``target`` is left untouched. ``durable=False`` skips the fsync: the rename
    still guarantees no reader or killed process sees a partial file, only a power loss could; use it for
    re-creatable entries written on a hot path (the LLM response cache).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + target.name + "-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes 0700; a model folder should read like any other
    else:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + target.name + "-", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o644)  # mkstemp makes 0600; artefacts should read like any other file
    try:
        yield tmp
        if is_dir:
            if target.exists():
                old = target.with_name(TMP_PREFIX + target.name + "-old")
                shutil.rmtree(old, ignore_errors=True)
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        else:
            if durable:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


_unique = itertools.count()


def atomic_write_bytes(target: Path, data: bytes, *, durable: bool = True) -> Path:
    """``data`` to ``target`` through a temporary sibling: one open, one write, fsync on the same descriptor
    (unless ``durable=False``), rename. The hot path of every cache entry and corpus file, so it makes
    no more system calls than it needs (the parent folder is created only when missing)."""
    target = Path(target)
    tmp = target.with_name(f"{TMP_PREFIX}{target.name}-{os.getpid()}-{threading.get_ident()}-{next(_unique)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask: artefacts read like any other file
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(target: Path, text: str, encoding: str = "utf-8", *, durable: bool = True) -> Path:
    return atomic_write_bytes(target, text.encode(encoding), durable=durable)


def atomic_write_jsonl(target: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line (UTF-8, not ASCII-escaped); return the number of records."""
    count = 0
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    return count
