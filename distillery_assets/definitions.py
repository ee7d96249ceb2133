"""The single Dagster code location: every pipeline's definitions merged with the shared resources."""

import dagster as dg

from assets import corpus, dead_runs, filters, finetune, poetry, theme, thyme
from resources import build_resources

defs = dg.Definitions.merge(
    corpus.defs,
    filters.defs,
    finetune.defs,
    poetry.defs,
    theme.defs,
    thyme.defs,
    dead_runs.defs,  # the executor and sensor that free the pool slots of killed runs
    dg.Definitions(resources=build_resources()),
)
