"""The Modal app that fans filter scoring out over shards: ``modal deploy resources/modal_scoring.py``.

One function, ``score_shard(model_rel, rows, options)``: it scores one shard of documents (``{"id", "text"}``)
with the filter model at ``/vol/<model_rel>`` through ``distillery_assets.filters.score.score_shard``, the
same function the local backend runs in process. ``ComputeResource.shard_runner`` (backend ``modal``)
uploads the model folder to the volume and calls ``.map`` over waves of shards; results come back in
order and are merged, with the filter's rules applied, by ``filters.score.score_dataset``. A container
keeps the model it loaded for every later shard. Same image, volume and GPU settings as ``modal_app.py``.
"""

from __future__ import annotations

from pathlib import Path

import modal

from resources.modal_app import GPU, TIMEOUT_S, VOLUME_ROOT, image, volume

APP_NAME = "distillery-score"
FUNCTION_NAME = "score_shard"

app = modal.App(APP_NAME, image=image.add_local_python_source("resources"))


@app.function(gpu=GPU, timeout=TIMEOUT_S, volumes={VOLUME_ROOT: volume}, serialized=False)
def score_shard(model_rel: str, rows: list, options: dict | None = None) -> list:
    """Score one shard with the model folder ``/vol/<model_rel>``; returns ``[{"id", "scores"}]`` in order."""
    from distillery_assets.filters.score import score_shard as run_shard
    from distillery_assets.paths import safe_child

    volume.reload()  # see a model folder uploaded since this container started
    return run_shard(safe_child(Path(VOLUME_ROOT), model_rel, source="score_shard model"), rows, **(options or {}))
