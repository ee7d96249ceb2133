"""Every PartitionsDefinition of the code location, in one place.

Partition keys come from the project's editable data files, so adding a story group or an encyclopedia
category to ``data/config/corpus/prompt_tables.yaml`` adds the partition too.
"""

from __future__ import annotations

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
