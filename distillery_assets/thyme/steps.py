"""Thyme training as a compute step: ``TrainThymeSpec`` runs through ``ComputeResource.run_step`` like the
fine-tunes' steps, in this process (CPU here, CUDA when present) or on Modal (the spec travels as JSON, the
dataset folder is uploaded, the run folder comes back).

    TrainThymeSpec(experiment=exp, model_key="thyme", dataset_dir="thyme/books-cpu/dataset",
                   out_dir="thyme/books-cpu/models/thyme")                       -> ThymeTrainResult

The run folder holds ``latest/`` while training (resumed from after a kill), ``best/``, ``model.pt``,
``training_history.json`` and ``model.json`` (see :mod:`distillery_assets.thyme.train`). A finished run
with the same fingerprint comes back with ``reused=True`` and nothing is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from distillery_assets.steps import RelPath, StepResult, StepSpec
from distillery_assets.thyme.experiments import Experiment


class ThymeTrainResult(StepResult):
    kind: Literal["train_thyme"] = "train_thyme"
    fingerprint: str
    experiment: str
    key: str
    architecture: str
    parameters: int
    vocab_size: int
    steps: int
    tokens_seen: int
    train_seconds: float
    tokens_per_s: float
    resumed_from_step: int
    device: str
    best_epoch: int | None = None
    best_val_loss: float | None = None
    best_seed_ppl: float | None = None
    epochs: list[dict[str, Any]] = []
    stopped_early: dict[str, int] | None = None  # {"epoch", "best_epoch", "patience"}: patience ended the run


class TrainThymeSpec(StepSpec[ThymeTrainResult]):
    """Train one model of an experiment on its tokenized dataset; the run folder is the output."""

    kind: Literal["train_thyme"] = "train_thyme"
    experiment: Experiment
    model_key: str
    dataset_dir: RelPath
    out_dir: RelPath

    def inputs(self) -> list[str]:
        return [self.dataset_dir]

    def outputs(self) -> list[str]:
        return [self.out_dir]

    def run(self, root: Path) -> ThymeTrainResult:
        from distillery_assets.thyme.dataset import open_dataset
        from distillery_assets.thyme.train import train_model

        if self.model_key not in self.experiment.models:
            raise ValueError(f"experiment {self.experiment.name!r} has no model {self.model_key!r} "
                             f"(models: {', '.join(self.experiment.models)})")
        dataset = open_dataset(self.path("dataset_dir", root))
        trained = train_model(self.experiment, self.model_key, dataset, self.path("out_dir", root))
        fields = set(ThymeTrainResult.model_fields) - {"kind", "reused"}
        return ThymeTrainResult(reused=trained.reused, **{k: v for k, v in trained.info.items() if k in fields})
