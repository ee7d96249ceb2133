"""Requests-per-minute and tokens-per-minute limits over a sliding 60 s window, shared by all threads.

``await acquire(tokens, sleep)`` waits (on the client's event loop, with the ``sleep`` it is given) until one
more request of about ``tokens`` tokens fits in both budgets and returns a ticket; ``settle(ticket, actual)``
replaces the estimate by the real count once known. A single request larger than the whole token budget is
let through when the window is empty (else it never could). The clock is injectable so tests run without
waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW_S = 60.0


class _Ticket:
    __slots__ = ("at", "tokens")

    def __init__(self, at: float, tokens: int):
        self.at = at
        self.tokens = tokens


class RateLimiter:
    def __init__(self, rpm: int | None = None, tpm: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        self.rpm = rpm or None
        self.tpm = tpm or None
        self._clock = clock
        self._window: deque[_Ticket] = deque()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._window and now - self._window[0].at >= WINDOW_S:
            self._window.popleft()

    def _wait_needed(self, now: float, tokens: int) -> float:
        self._expire(now)
        if not self._window:
            return 0.0
        waits = [0.0]
        if self.rpm and len(self._window) >= self.rpm:
            waits.append(self._window[len(self._window) - self.rpm].at + WINDOW_S - now)
        if self.tpm:
            used = sum(t.tokens for t in self._window)
            if used + tokens > self.tpm:
                # wait until enough of the oldest tickets leave the window
                freed, need = 0, used + tokens - self.tpm
                for ticket in self._window:
                    freed += ticket.tokens
                    if freed >= need:
                        waits.append(ticket.at + WINDOW_S - now)
                        break
                else:
                    waits.append(self._window[-1].at + WINDOW_S - now)
        return max(waits)

    def _take(self, tokens: int) -> tuple[_Ticket | None, float]:
        """A ticket if one more request fits now, else how long to wait before asking again."""
        with self._lock:
            now = self._clock()
            wait = self._wait_needed(now, tokens)
            if wait <= 0:
                ticket = _Ticket(now, tokens)
                self._window.append(ticket)
                return ticket, 0.0
        return None, min(wait, 5.0)  # re-check often: settled tokens may free the budget sooner

    async def acquire(self, tokens: int, sleep: Callable[[float], Awaitable[None]]) -> _Ticket | None:
        """A ticket once one more request of about ``tokens`` tokens fits; waits with ``await sleep(seconds)``."""
        if not self.rpm and not self.tpm:
            return None
        while True:
            ticket, wait = self._take(tokens)
            if ticket is not None:
                return ticket
            await sleep(wait)

    def settle(self, ticket: _Ticket | None, actual_tokens: int) -> None:
        if ticket is not None:
            with self._lock:
                ticket.tokens = int(actual_tokens)


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate (about 4 characters per token) used before the real count is known."""
    return len(text) // 4 + 1
