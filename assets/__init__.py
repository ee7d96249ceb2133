"""The asset graph: one module per pipeline, each exposing ``defs``; thin wiring over distillery_assets."""
