"""The single Dagster code location and its composition root: every pipeline's definitions merged with the
resources and the IO manager, built here and nowhere else. Every asset gets its kinds, owners, tags and a
link to its code here too (:mod:`assets.presentation`)."""

import dagster as dg

from assets import corpus, dead_runs, filters, finetune, poetry, theme, thyme
from assets.presentation import presented
from io_managers.files import DistilleryIOManager
from resources.catalog import CatalogResource
from resources.compute import ComputeResource
from resources.hub import HubResource
from resources.llm import LLMResource


def build_resources() -> dict:
    """The one resource dictionary of the code location (keys: llm, catalog, compute, hub, io_manager), configured
    from the environment; the LLM resource and the IO manager share the one catalogue."""
    catalog = CatalogResource()
    return {
        "catalog": catalog,
        "llm": LLMResource.from_env(catalog=catalog),
        "compute": ComputeResource.from_env(),
        "hub": HubResource.from_env(),
        "io_manager": DistilleryIOManager(catalog=catalog),
    }


defs = dg.Definitions.merge(
    *(presented(pipeline) for pipeline in (corpus.defs, filters.defs, finetune.defs, poetry.defs, theme.defs,
                                           thyme.defs)),
    dead_runs.defs,  # the executor and sensor that free the pool slots of killed runs
    dg.Definitions(resources=build_resources()),
)
