"""Sources: the files a person edits (``inputs_dir()`` and ``config_dir()``), the leaves of every lineage.

When an artefact names an input that lies under one of the source roots and no asset produced it, the
catalogue records that file as an artefact of its own with asset key ``source:<root>/<relative path>``
(``source:inputs/poetry/requests.txt``, ``source:config/corpus/prompt_tables.yaml``), its sha256 and
size, and the edge points at that row. A source is re-recorded only when its bytes change, so the
catalogue keeps one row per version a run actually read; ``lineage`` walks down to these rows.

A folder named as an input under a source root stands for the visible files inside it (one source per
file, so an edited poem shows up as that poem, not as "the folder changed").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from distillery_assets.paths import config_dir, filters_root, inputs_dir

SOURCE_PREFIX = "source:"


def default_roots() -> dict[str, Path]:
    """Label -> folder of every place that holds edited files (the current environment's folders): inputs,
    config, and the filter definitions (``data/filters/<name>/v<N>/{config.yaml, prefilter.yaml, prompt.md}``;
    what a filter version produces beside them is named with its asset key, so it is never taken for one)."""
    return {"inputs": inputs_dir(), "config": config_dir(), "filters": filters_root()}


def is_source_key(asset_key: str | None) -> bool:
    return bool(asset_key) and asset_key.startswith(SOURCE_PREFIX)


def source_key(path: Path | str, roots: Mapping[str, Path]) -> str | None:
    """``source:<label>/<relative path>`` if ``path`` lies under one of ``roots``, else None.

    The most specific root wins (a config folder placed inside the inputs folder still reads ``config/``)."""
    resolved = Path(path).resolve()
    best: tuple[int, str] | None = None
    for label, root in roots.items():
        root = Path(root).resolve()
        if resolved != root and root not in resolved.parents:
            continue
        depth = len(root.parts)
        if best is None or depth > best[0]:
            best = (depth, f"{SOURCE_PREFIX}{label}/{resolved.relative_to(root).as_posix()}")
    return best[1] if best else None


def visible_files(paths: Iterable[Path | str]) -> list[Path]:
    """Files among ``paths``, each folder replaced by the files inside it (sorted; names starting with a dot
    skipped, as the pipelines skip them); paths that do not exist are left out."""
    out: list[Path] = []
    for path in (Path(p) for p in paths):
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out.extend(p for p in sorted(path.rglob("*"))
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]
