"""The DuckDB catalogue: which files exist, what made them, what the LLM calls cost, how runs went.

Lineage ends at the files people edit (``inputs_dir()``, ``config_dir()``), catalogued as sources
(``source:<inputs|config>/<path>``, see :mod:`.sources`).

No Dagster imports here; the resource is ``resources.catalog.CatalogResource`` and the CLI is
``python -m distillery_assets.catalog``.
"""

from distillery_assets.catalog.hashing import Fingerprint, fingerprint
from distillery_assets.catalog.sources import SOURCE_PREFIX, is_source_key
from distillery_assets.catalog.store import ArtifactRecord, Catalog, CatalogError, InputRef, NewArtifact

__all__ = ["SOURCE_PREFIX", "ArtifactRecord", "Catalog", "CatalogError", "Fingerprint", "InputRef", "NewArtifact",
           "fingerprint", "is_source_key"]
