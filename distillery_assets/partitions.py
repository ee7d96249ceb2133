"""Every PartitionsDefinition of the code location, in one place.

Partition keys come from the project's editable data files, so adding a story group or an encyclopedia
category to ``data/config/corpus/prompt_tables.yaml`` adds the partition too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from distillery_assets.corpus.tables import default_tables
from distillery_assets.filters.paths import filter_versions
from distillery_assets.thyme.experiments import experiment_names

_corpus_tables = default_tables()

# corpus: the story word-count groups in table order (shortest first: "200-400w" ... "1800-2500w"), and the
# encyclopedia categories sorted by name, so that the range "arts...technology" covers every category.
story_group_partitions = dg.StaticPartitionsDefinition(list(_corpus_tables.story_groups))
encyclopedia_category_partitions = dg.StaticPartitionsDefinition(sorted(_corpus_tables.encyclopedia))

# thyme: one partition per experiment file data/config/thyme/<name>.yaml (a new file is a new partition).
thyme_experiment_partitions = dg.StaticPartitionsDefinition(experiment_names())

# filters: one partition per filter version folder data/filters/<name>/v<N>/ holding a config.yaml, keyed
# '<name>.v<N>' (educational_value.v1); found when the definitions load, so a new version folder is a new
# partition after a reload. Only folder names are read here: a broken config fails its own partition.
filter_version_partitions = dg.StaticPartitionsDefinition([v.key for v in filter_versions()])


# ------------------------------------------------------------------- partitions read across definitions
# A run holds the assets of one partitions definition (``JobDefinition._get_partitions_def`` fails on two), and
# ``*asset`` selects every upstream asset whatever its partition mapping, so the corpus documents that the
# filters and thyme's ``distillery`` experiment read cannot be Dagster edges of theirs. Their asset pages name
# the corpus partitions read instead, from the ``.corpus`` paths: ``<root>/stories/<group>/...`` and
# ``<root>/encyclopedia/<category>/...`` (:mod:`distillery_assets.corpus.layout`).

CORPUS_ASSET_PARTITIONS: dict[str, tuple[str, dg.StaticPartitionsDefinition]] = {
    "story_corpus": ("stories", story_group_partitions),
    "encyclopedia_corpus": ("encyclopedia", encyclopedia_category_partitions),
}
"""Each corpus asset: the corpus root's folder that holds its partitions, and its partitions definition."""


def asset_url(asset: str, partition: str | None = None) -> str:
    """The asset's page in the Dagster UI, relative to the webserver's root; with ``partition``, that
    partition's view (the URL the UI's own partition tags link to)."""
    from urllib.parse import quote

    url = f"/assets/{quote(asset, safe='/')}"
    return f"{url}?view=partitions&partition={quote(partition, safe='')}" if partition else url


def corpus_partition_of(path: str | Path, root: str | Path) -> tuple[str, str] | None:
    """``(asset, partition key)`` of a ``.corpus`` file under the corpus ``root``; None for a path outside
    the two halves or in a folder that is no partition of today's tables."""
    try:
        parts = Path(path).resolve().relative_to(Path(root).resolve()).parts
    except ValueError:
        return None
    if len(parts) < 3:
        return None
    for asset, (half, partitions) in CORPUS_ASSET_PARTITIONS.items():
        if parts[0] == half and parts[1] in partitions.get_partition_keys():
            return asset, parts[1]
    return None


def corpus_partitions_read(paths: Iterable[str | Path], root: str | Path,
                           assets: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """``{asset: {partition: .corpus files read}}`` for ``assets`` (default: both corpus assets), every
    partition of each listed in its definition's order, 0 where none of ``paths`` lies in it."""
    wanted = list(assets) if assets is not None else list(CORPUS_ASSET_PARTITIONS)
    counts = {a: dict.fromkeys(CORPUS_ASSET_PARTITIONS[a][1].get_partition_keys(), 0) for a in wanted}
    for path in paths:
        hit = corpus_partition_of(path, root)
        if hit and hit[0] in counts:
            counts[hit[0]][hit[1]] += 1
    return counts
