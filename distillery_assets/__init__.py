"""Distillery: LLM training-data and fine-tuning pipelines as one Dagster code location.

The subpackages (corpus, poetry, theme, training, llm, catalog, io) are plain Python with no Dagster
imports; the Dagster wiring lives in the top-level ``assets``, ``resources`` and ``io_managers`` packages
and is assembled in :mod:`distillery_assets.definitions`.
"""
