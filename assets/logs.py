"""The one way a library's Python log lines reach a Dagster run's log (shown live in the UI)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def forward_logs(context, names: tuple[str, ...]) -> Iterator[None]:
    """While the block runs, records of the loggers ``names`` at INFO and above go to ``context.log``
    (warnings as warnings); the loggers' handlers and levels are restored afterwards."""
    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            (context.log.warning if record.levelno >= logging.WARNING else context.log.info)(record.getMessage())

    handler, loggers = Forward(level=logging.INFO), [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
