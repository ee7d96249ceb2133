"""On-disk response cache: one JSON file per request key under ``data_dir()/llm_cache/ab/<key>.json``.

Only successful answers are stored. Files are written atomically, so a crash never leaves a half entry,
and an unreadable entry is treated as a miss (and overwritten by the next success).

Claims: runs that overlap (CLI, UI, backfills, two machines sharing the data folder) pay for a request once.
Before asking, a run claims the request key: an exclusive ``flock`` on ``llm_cache/claims/ab/<key>.claim``,
held while it asks and until the answer is in the cache. Another run that finds the claim held waits for the
answer and reads it from the cache (the cache stays the one source of answers). The kernel drops the lock of
a process that dies, so a dead run's claim expires with it. The holder removes the file while it still holds
it; a run that locked the removed file sees it unlinked (``st_nlink == 0``) and tries again, as filelock
does. Plain ``fcntl`` rather than ``filelock``: a claim is taken per request on the client's event loop, and
this costs a seventh of filelock's (35 against 240 us per claim and release, measured). Over NFS, ``flock`` reaches other machines only where
the mount supports locking (Linux maps it onto NFS byte-range locks: NFSv4 or lockd, and not with
``local_lock=flock``); where ``flock`` is refused (ENOSYS, ENOLCK, EOPNOTSUPP) or missing (no ``fcntl``),
claims are off with one warning and only the per-process de-duplication remains.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from distillery_assets.io import atomic_write_text

try:
    import fcntl
except ImportError:  # not a POSIX system: no claims (see the module docstring)
    fcntl = None  # type: ignore[assignment]

_KEY = re.compile(r"[0-9a-f]{64}")
_HELD = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}  # another open file holds the lock
_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}  # the filesystem cannot lock
log = logging.getLogger(__name__)


class Claim:
    """One run's hold on a request key (see the module docstring); ``release()`` once its answer is cached
    (or the request failed). ``fd`` None: claims are off on this filesystem, nothing is held."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self._fd = path, fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: see the module docstring
        finally:
            os.close(fd)  # drops the lock


class ResponseCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.claims_off = False  # set when the filesystem refuses flock

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a sha256 request key: {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def claim_path(self, key: str) -> Path:
        self.path(key)  # checks the key
        return self.root / "claims" / key[:2] / f"{key}.claim"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        # No fsync: an entry can always be asked for again, and this runs once per answer on the hot path.
        atomic_write_text(self.path(key), json.dumps(entry, ensure_ascii=False, sort_keys=True), durable=False)

    def claim(self, key: str) -> Claim | None:
        """The claim on ``key`` if no live run holds it (one attempt, no waiting), else None."""
        path = self.claim_path(key)
        if fcntl is None or self.claims_off:
            return Claim(path, None)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _HELD:
                return None
            if exc.errno in _NO_FLOCK:
                self.claims_off = True
                log.warning(f"{path.parent.parent}: this filesystem refuses flock ({exc}); runs that overlap may "
                            "pay twice for a request")
                return Claim(path, None)
            raise
        if os.fstat(fd).st_nlink == 0:  # its holder removed it after we opened it: held until a moment ago
            os.close(fd)
            return None
        return Claim(path, fd)
