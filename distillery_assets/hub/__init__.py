"""Hugging Face Hub helpers without Dagster: the one model-card renderer (the fine-tune chain's card,
``training.report.model_card``, and thyme's, ``thyme.report``, render through it). Uploading is ``resources.hub``."""

from distillery_assets.hub.cards import ModelCardInfo, render_model_card

__all__ = ["ModelCardInfo", "render_model_card"]
