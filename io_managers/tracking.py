"""Which upstream artefacts each step has loaded, so its outputs can name them as inputs.

Dagster runs a step's input loading and output handling in the same process (the multiprocess
executor gives each step its own process; the in-process executor runs them one after another), so a
process-local map keyed by (run id, step key) is enough. A step may have several outputs, so entries
are kept after reading; only the newest ``MAX_STEPS`` steps are remembered.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from distillery_assets.catalog import InputRef

MAX_STEPS = 256

_lock = threading.Lock()
_loaded: dict[tuple[str, str], list[InputRef]] = defaultdict(list)


def note_loaded(run_id: str, step_key: str, refs: list[InputRef]) -> None:
    with _lock:
        _loaded[(run_id, step_key)].extend(refs)
        while len(_loaded) > MAX_STEPS:
            del _loaded[next(iter(_loaded))]


def loaded_inputs(run_id: str, step_key: str) -> list[InputRef]:
    """Inputs this step has loaded so far."""
    with _lock:
        return list(_loaded.get((run_id, step_key), ()))
