"""Batch progress: counts, rate, and the rule for when a line is worth logging (every 10% or 10 s)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    label: str
    done: int
    total: int
    ok: int
    failed: int
    cached: int
    rate: float  # finished requests per second since the batch started

    def line(self) -> str:
        return (f"{self.label}: {self.done}/{self.total} done ({self.cached} cached, {self.failed} failed) "
                f"{self.rate:.1f} req/s")


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    def __init__(self, label: str, total: int, callback: ProgressCallback | None,
                 every_fraction: float = 0.1, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.callback = label, total, callback
        self.every_fraction, self.every_s, self._clock = every_fraction, every_s, clock
        self.ok = self.failed = self.cached = 0
        self._start = self._last_emit = clock()
        self._next_step = 1
        self._lock = threading.Lock()

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def snapshot(self) -> Progress:
        elapsed = max(self._clock() - self._start, 1e-9)
        return Progress(self.label, self.done, self.total, self.ok, self.failed, self.cached, self.done / elapsed)

    def heartbeat(self) -> None:
        """Emit the current counts if nothing was emitted for ``every_s`` (called by a waiting batch)."""
        with self._lock:
            due = self._clock() - self._last_emit >= self.every_s
            if due:
                self._last_emit = self._clock()
                snap = self.snapshot()
        if due and self.callback is not None:
            self.callback(snap)

    def record(self, ok: bool, cached: bool) -> None:
        with self._lock:
            self.ok += ok
            self.failed += not ok
            self.cached += cached
            now = self._clock()
            fraction_due = self.total and self.done >= self._next_step * self.every_fraction * self.total
            if fraction_due:
                while self._next_step * self.every_fraction * self.total <= self.done:
                    self._next_step += 1
            due = fraction_due or now - self._last_emit >= self.every_s or self.done == self.total
            if due:
                self._last_emit = now
                snap = self.snapshot()
        if due and self.callback is not None:
            self.callback(snap)
