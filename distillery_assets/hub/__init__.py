"""Hugging Face Hub helpers without Dagster: the one model-card and dataset-card renderer (the fine-tune
chain's card, ``training.report.model_card``, renders through it). Uploading is ``resources.hub``."""

from distillery_assets.hub.cards import DatasetCardInfo, ModelCardInfo, SplitInfo, render_dataset_card, render_model_card

__all__ = ["DatasetCardInfo", "ModelCardInfo", "SplitInfo", "render_dataset_card", "render_model_card"]
