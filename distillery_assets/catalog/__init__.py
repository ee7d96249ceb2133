"""The DuckDB catalogue: which files exist, what made them, what the LLM calls cost, how runs went.

Lineage ends at the files people edit (``inputs_dir()``, ``config_dir()``), catalogued as sources
(``source:<inputs|config>/<path>``, see :mod:`.sources`).

Every row is written ahead to a spool before DuckDB has it (:mod:`.spool`), so a killed run loses none;
``verify`` also finds files on disk that no row knows (:mod:`.untracked`).

No Dagster imports here; the resource is ``resources.catalog.CatalogResource`` and the CLI is
``python -m distillery_assets.catalog``.
"""

from distillery_assets.catalog.hashing import Fingerprint, fingerprint
from distillery_assets.catalog.sources import SOURCE_PREFIX, is_source_key
from distillery_assets.catalog.store import (ArtifactRecord, Catalog, CatalogBusy, CatalogError, InputRef,
                                             NewArtifact)

__all__ = ["SOURCE_PREFIX", "ArtifactRecord", "Catalog", "CatalogBusy", "CatalogError", "Fingerprint", "InputRef",
           "NewArtifact", "fingerprint", "is_source_key"]
