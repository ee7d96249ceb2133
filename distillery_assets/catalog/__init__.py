"""The DuckDB catalogue: which files exist, what made them, what the LLM calls cost, how runs went.

No Dagster imports here; the resource is ``resources.catalog.CatalogResource`` and the CLI is
``python -m distillery_assets.catalog``.
"""

from distillery_assets.catalog.hashing import Fingerprint, fingerprint
from distillery_assets.catalog.store import ArtifactRecord, Catalog, CatalogError, InputRef

__all__ = ["ArtifactRecord", "Catalog", "CatalogError", "Fingerprint", "InputRef", "fingerprint"]
