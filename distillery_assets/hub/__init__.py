"""Hugging Face Hub helpers without Dagster: model and dataset cards. Uploading is resources.hub."""

from distillery_assets.hub.cards import DatasetCardInfo, ModelCardInfo, SplitInfo, render_dataset_card, render_model_card

__all__ = ["DatasetCardInfo", "ModelCardInfo", "SplitInfo", "render_dataset_card", "render_model_card"]
