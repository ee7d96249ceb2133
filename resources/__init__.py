"""Side-effect boundaries as Dagster ConfigurableResources, configured once from the environment.

They are built together, with the IO manager, by the composition root
(``distillery_assets/definitions.py: build_resources``)."""
