"""Training datasets, Dagster-free. ``chatml``: the one ChatML module (example shape, dedupe, split rule,
leakage, validation, split files with their metadata) that the poetry and theme pipelines use."""
