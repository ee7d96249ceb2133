"""Asset checks that guard catalogued files: the newest artefact of every partition still exists and
still has the sha256 the catalogue recorded (nobody edited or deleted it behind Dagster's back).

    defs = dg.Definitions(assets=[poet_gguf], asset_checks=catalogued_files_checks([poet_gguf]))
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from assets.meta import table_md
from resources.catalog import CatalogResource


def catalogued_files_check(asset: dg.AssetsDefinition | dg.AssetKey | str) -> dg.AssetChecksDefinition:
    key = asset.key if isinstance(asset, dg.AssetsDefinition) else dg.AssetKey.from_coercible(asset)
    name = key.to_user_string()

    @dg.asset_check(asset=key, name="files_match_catalogue",
                    description=f"the newest files of {name} exist and match their catalogued sha256")
    def _check(catalog: CatalogResource) -> dg.AssetCheckResult:
        rows = catalog.get().verify(name)
        bad = [r for r in rows if r["status"] != "ok"]
        table = table_md([(r["partition"], r["path"], r["status"]) for r in bad[:50]],
                         ("partition", "path", "status"))
        return dg.AssetCheckResult(
            passed=bool(rows) and not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"checked": len(rows), "missing": sum(r["status"] == "missing" for r in rows),
                      "changed": sum(r["status"] == "changed" for r in rows),
                      **({"problems": table} if bad else {})},
            description=None if rows else f"no artefact of {name} is in the catalogue",
        )

    return _check


def catalogued_files_checks(assets: Sequence[dg.AssetsDefinition | dg.AssetKey | str]) -> list[dg.AssetChecksDefinition]:
    return [catalogued_files_check(a) for a in assets]
