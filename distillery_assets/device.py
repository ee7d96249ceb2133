"""The one device picker: where a model runs (training, export, embedding, scoring)."""

from __future__ import annotations


def pick_device(requested: str | None = None, *, cuda_required: str | None = None) -> str:
    """``requested`` when named (``cpu``, ``cuda``, ``cuda:1``), else ``cuda`` when a CUDA device is present,
    else ``cpu``. ``cuda_required`` says why this run cannot go without CUDA (a GPU recipe); with it and no
    CUDA device, a RuntimeError says so instead of falling back to the CPU."""
    if requested:
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if cuda_required:
        raise RuntimeError(f"{cuda_required}; no CUDA device is present")
    return "cpu"
