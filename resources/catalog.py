"""``CatalogResource``: the DuckDB catalogue as a Dagster resource (engine: distillery_assets.catalog)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from distillery_assets.catalog import Catalog
from distillery_assets.paths import data_dir


class CatalogResource(dg.ConfigurableResource):
    """Where the catalogue lives. ``path=None`` means ``data_dir()/catalog.duckdb``, resolved at call
    time so that ``DISTILLERY_DATA_DIR`` set for a run (or a test) is honoured."""

    path: str | None = None

    def get(self) -> Catalog:
        return Catalog(Path(self.path) if self.path else data_dir() / "catalog.duckdb")
