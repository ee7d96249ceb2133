"""``DistilleryIOManager``: asset values become files under data_dir(), each one registered in the catalogue.

What an asset may return
  pathlib.Path        a file or directory the asset already wrote atomically under data_dir()
  list[dict]          written here as JSONL at data_dir()/<asset key path>/<partition or "all">.jsonl
  dict partition->…   either of the above per partition, for a step that covers several partitions
Anything else (None included) is refused with a TypeError naming the asset.
What a downstream asset receives: the Path (one partition or unpartitioned), or dict partition -> Path
when it reads several partitions of the upstream asset.

Inputs recorded for lineage: the upstream artefacts this step loaded through this IO manager, paths listed
in the output metadata under "inputs" (``dg.Output(value, metadata={"inputs": [...]})`` or
``context.add_output_metadata``), and, for upstream assets declared with ``deps=`` that were not loaded,
their newest catalogued artefacts (same partition when there is one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from distillery_assets.catalog import ArtifactRecord, Catalog, InputRef
from distillery_assets.io import atomic_write_jsonl
from distillery_assets.markdown import INLINE_MD_LIMIT
from distillery_assets.paths import data_dir, safe_child
from io_managers.register import collect_inputs, inside_data_dir, record_metadata
from io_managers.tracking import note_loaded
from resources.catalog import CatalogResource

PREVIEW_RECORDS = 3
PREVIEW_CHARS = 70  # per string in the JSON preview: a code block does not wrap, so its lines must fit the column


def jsonl_path(asset_key: dg.AssetKey, partition: str | None) -> Path:
    """Stable, partition-aware location of a list[dict] asset value."""
    name = asset_key.to_user_string()
    folder = safe_child(data_dir(), "/".join(asset_key.path), source=f"asset key {name}")
    return safe_child(folder, f"{partition if partition is not None else 'all'}.jsonl",
                      source=f"partition key of asset {name}")


def _preview(records: list[dict[str, Any]]) -> str:
    """The first records as JSON, as many and as long as the asset page shows in place (the file, linked as
    ``path``, holds them all)."""
    def shorten(value: Any, chars: int) -> Any:
        if isinstance(value, str) and len(value) > chars:
            return value[:chars] + "…"
        if isinstance(value, dict):
            return {k: shorten(v, chars) for k, v in value.items()}
        if isinstance(value, list):
            return [shorten(v, chars) for v in value[:10]]
        return value

    md = ""
    for count in range(len(records), 0, -1):
        for chars in (PREVIEW_CHARS, 40, 20):
            body = "\n".join(json.dumps(shorten(r, chars), ensure_ascii=False, indent=1, default=str)
                             for r in records[:count])
            md = f"```json\n{body}\n```"
            if len(md) < INLINE_MD_LIMIT:
                return md
    return md


def _explicit_inputs(context: dg.OutputContext) -> list[InputRef]:
    raw = context.output_metadata.get("inputs") if context.output_metadata else None
    value = getattr(raw, "value", raw)
    if value is None:
        return []
    if isinstance(value, str | Path):
        value = [value]
    if not isinstance(value, list | tuple):
        raise TypeError(f"asset {context.asset_key.to_user_string()}: output metadata 'inputs' must be a list "
                        f"of paths, got {type(value).__name__}")
    return [InputRef(str(item)) for item in value]


class DistilleryIOManager(dg.ConfigurableIOManager):
    """Files under data_dir(), atomically written and catalogued (see module docstring)."""

    catalog: CatalogResource

    # -- writing -------------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not context.has_asset_key:
            raise TypeError("DistilleryIOManager stores asset outputs only (this output has no asset key)")
        name = context.asset_key.to_user_string()
        partitions: list[str | None] = (
            list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        )
        if len(partitions) > 1:
            if not (isinstance(obj, Mapping) and set(obj) == set(partitions)):
                raise TypeError(
                    f"asset {name}: this step covers {len(partitions)} partitions; return a dict "
                    f"partition key -> Path | list[dict] with exactly those keys (got {type(obj).__name__})")
            values = dict(obj)
        else:
            values = {partitions[0]: obj}

        catalog = self.catalog.get()
        inputs = self._inputs(context, catalog, partitions)
        records: list[ArtifactRecord] = []
        previews: list[dict[str, Any]] = []
        for partition, value in values.items():
            path = self._store(context, partition, value, previews)
            records.append(catalog.record_artifact(
                asset_key=name, partition=partition, path=path, run_id=context.run_id, inputs=inputs,
                metadata={"step": context.step_key},
            ))
        metadata = record_metadata(records, catalog)
        if previews:
            metadata["preview"] = dg.MetadataValue.md(_preview(previews))
        metadata["inputs"] = dg.MetadataValue.json(sorted({catalog.relative(ref.path) for ref in inputs}))
        context.add_output_metadata(metadata)

    def _store(self, context: dg.OutputContext, partition: str | None, value: Any,
               previews: list[dict[str, Any]]) -> Path:
        name = context.asset_key.to_user_string()
        if isinstance(value, Path):
            return inside_data_dir(value, what=f"asset {name}")
        if isinstance(value, list | tuple):
            for index, record in enumerate(value):
                if not isinstance(record, dict):
                    raise TypeError(f"asset {name}: item {index} of the returned list is "
                                    f"{type(record).__name__}, expected dict (one JSONL record)")
            target = jsonl_path(context.asset_key, partition)
            atomic_write_jsonl(target, value)
            if len(previews) < PREVIEW_RECORDS:
                previews.extend(value[: PREVIEW_RECORDS - len(previews)])
            return target
        raise TypeError(f"asset {name} returned {type(value).__name__}; DistilleryIOManager stores a "
                        "pathlib.Path (a file or directory under data_dir) or a list[dict] (written as JSONL)")

    def _inputs(self, context: dg.OutputContext, catalog: Catalog,
                partitions: list[str | None]) -> list[InputRef]:
        try:
            deps = [dep.asset_key for dep in context.asset_spec.deps]
        except dg.DagsterInvariantViolationError:
            deps = []
        return collect_inputs(catalog, run_id=context.run_id, step_key=context.step_key, deps=deps,
                              partitions=partitions, explicit=_explicit_inputs(context))

    # -- reading -------------------------------------------------------------------------------
    def load_input(self, context: dg.InputContext) -> Path | dict[str, Path]:
        if not context.has_asset_key:
            raise TypeError("DistilleryIOManager loads asset inputs only (this input has no asset key)")
        key = context.asset_key
        catalog = self.catalog.get()
        if context.has_asset_partitions:
            paths: dict[str | None, Path] = {p: self._locate(catalog, key, p) for p in context.asset_partition_keys}
        else:
            paths = {None: self._locate(catalog, key, None)}
        step = context.step_context
        note_loaded(step.run_id, step.step.key,
                    [InputRef(path, key.to_user_string()) for path in paths.values()])
        if list(paths) == [None]:
            return paths[None]
        if len(paths) == 1 and step.has_partition_key:
            return next(iter(paths.values()))
        return {str(p): path for p, path in paths.items()}

    def _locate(self, catalog: Catalog, key: dg.AssetKey, partition: str | None) -> Path:
        name = key.to_user_string()
        where = f"asset {name}" + (f" partition {partition!r}" if partition is not None else "")
        row = catalog.latest_artifact(name, partition)
        if row is not None:
            siblings = catalog.paths_in_run(name, partition, row["run_id"])
            if siblings > 1:
                raise ValueError(f"{where}: its newest run wrote {siblings} files, so there is no single Path to "
                                 f"load; declare it with deps=[...] and read its files, or have it return one "
                                 f"Path (a file or a directory)")
            path = catalog.absolute(row["path"])
            if not path.exists():
                raise FileNotFoundError(f"{where}: catalogued file {path} is missing; re-materialize it")
            return path
        raise FileNotFoundError(f"{where}: no artefact in the catalogue {catalog.path}; materialize it first")
