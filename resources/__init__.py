"""Side-effect boundaries as Dagster ConfigurableResources, configured once from the environment."""


def build_resources() -> dict:
    """The one resource dictionary of the code location (keys: llm, catalog, compute, hub, io_manager)."""
    from io_managers.files import DistilleryIOManager
    from resources.catalog import CatalogResource
    from resources.compute import ComputeResource
    from resources.hub import HubResource
    from resources.llm import LLMResource

    catalog = CatalogResource()
    return {
        "catalog": catalog,
        "llm": LLMResource.from_env(catalog=catalog),
        "compute": ComputeResource.from_env(),
        "hub": HubResource.from_env(),
        "io_manager": DistilleryIOManager(catalog=catalog),
    }
