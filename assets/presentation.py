"""How every asset presents itself in the Dagster UI: kinds, owners, tags and a link to its code, applied in
one place (``distillery_assets.definitions``) to every asset of the code location.

* **kinds**: what the asset declares (``pytorch``, ``gguf``, ``jsonl``...), plus what does its work under the
  settings the definitions load with, as :mod:`assets.pools` decides pools: an asset that calls the LLM
  resource gets the provider's kind (``llamacpp`` for the embedded local model, else ``openai``,
  ``anthropic`` or ``fal``, replacing any provider kind a decorator named); one that runs through the compute
  resource gets ``modal`` on the Modal backend.
* **owners**: the team of the asset's pipeline (:data:`PIPELINES`).
* **tags**: ``pipeline`` (the group), ``seed`` (the seed system it reproduces, ``shared/seeds/``) and
  ``compute``: ``local`` (this machine's process), ``modal`` (the compute resource's Modal backend) or
  ``provider`` (an LLM provider's API); ``llm`` names the provider for assets that call the LLM resource.
* **code**: ``dagster/code_references`` to the file and line of the asset's function
  (``dg.with_source_code_references``); with ``DISTILLERY_GIT_URL`` set (``https://github.com/<owner>/<repo>``,
  branch ``DISTILLERY_GIT_BRANCH``, default ``main``) they become links into the repository
  (``dg.link_code_references_to_git``).

Like pools, these are fixed when the definitions load (``DISTILLERY_LLM_PROVIDER``,
``DISTILLERY_COMPUTE_BACKEND``); a resource overridden in one run's config does not change them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from distillery_assets.llm import LLMSettings
from distillery_assets.paths import repo_root


@dataclass(frozen=True)
class Pipeline:
    seed: str
    """The seed system the pipeline reproduces (``shared/seeds/<seed>_*.txt``)."""
    owner: str


PIPELINES: dict[str, Pipeline] = {
    "corpus": Pipeline("000", "team:corpus"),
    "poetry": Pipeline("001", "team:poetry"),
    "thyme": Pipeline("002", "team:thyme"),
    "theme": Pipeline("003", "team:theme"),
    "filters": Pipeline("004", "team:filters"),
    "models": Pipeline("001-003", "team:finetune"),  # base_model: the checkpoint poetry's and theme's LoRAs start from
}
"""Each asset group: its seed and owning team."""

LLM_KINDS = {"local": "llamacpp", "openai": "openai", "anthropic": "anthropic", "fal": "fal"}
"""The kind of each LLM provider (the local provider runs the embedded GGUF in llama.cpp)."""

PROVIDER_ASSETS = {"theme_model_benchmark": "openai"}
"""Assets that call an LLM endpoint of their own (run config), not through the LLM resource."""


def llm_provider() -> str:
    """The LLM provider the definitions load with (``DISTILLERY_LLM_PROVIDER``, default ``local``)."""
    return LLMSettings.from_env().provider


def compute_backend() -> str:
    """The compute backend the definitions load with (``DISTILLERY_COMPUTE_BACKEND``, default ``local``)."""
    from resources.compute import ComputeResource

    return ComputeResource.from_env().backend


def _compute(resources: set[str], key: str, provider: str, backend: str) -> str:
    if key in PROVIDER_ASSETS:
        return "provider"
    if "llm" in resources:
        return "local" if provider == "local" else "provider"
    if "compute" in resources:
        return "local" if backend == "local" else "modal"
    return "local"


def present_asset(assets_def: dg.AssetsDefinition, *, provider: str, backend: str) -> dg.AssetsDefinition:
    """One assets definition with its kinds, owners and tags set (see the module docstring)."""
    resources = set(assets_def.required_resource_keys)

    def spec(s: dg.AssetSpec) -> dg.AssetSpec:
        name = s.key.to_user_string()
        pipeline = PIPELINES.get(s.group_name or "")
        if pipeline is None:
            raise ValueError(f"asset {name} is in group {s.group_name!r}, which has no entry in PIPELINES")
        kinds = set(s.kinds) | ({PROVIDER_ASSETS[name]} if name in PROVIDER_ASSETS else set())
        if "llm" in resources:  # the provider it runs on now, not one a decorator named
            kinds = kinds - set(LLM_KINDS.values()) | {LLM_KINDS.get(provider, provider)}
        if "compute" in resources and backend != "local":
            kinds.add(backend)
        compute = _compute(resources, name, provider, backend)
        tags = {**s.tags, "pipeline": s.group_name, "seed": pipeline.seed, "compute": compute}
        if "llm" in resources:
            tags["llm"] = provider
        tags = {k: v for k, v in tags.items() if not k.startswith("dagster/kind/")}
        return s.replace_attributes(kinds=kinds, owners=[*s.owners, pipeline.owner]
                                    if pipeline.owner not in s.owners else s.owners, tags=tags)

    return assets_def.map_asset_specs(spec)


def present(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Every assets definition with kinds, owners, tags and code references."""
    provider, backend = llm_provider(), compute_backend()
    out = [present_asset(a, provider=provider, backend=backend) for a in assets]
    with warnings.catch_warnings():  # both helpers are marked beta: one warning per definition load, nothing to act on
        warnings.simplefilter("ignore", dg.BetaWarning)
        out = list(dg.with_source_code_references(out))
        git_url = os.environ.get("DISTILLERY_GIT_URL")
        if git_url:
            out = list(dg.link_code_references_to_git(
                out, git_url=git_url.rstrip("/"), git_branch=os.environ.get("DISTILLERY_GIT_BRANCH", "main"),
                file_path_mapping=dg.AnchorBasedFilePathMapping(local_file_anchor=repo_root() / "pyproject.toml",
                                                                file_anchor_path_in_repository="pyproject.toml")))
    return out


def presented(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` with :func:`present` applied to its assets (everything else as it was)."""
    return dg.Definitions(assets=present(list(defs.assets or [])), asset_checks=defs.asset_checks,
                          jobs=defs.jobs, schedules=defs.schedules, sensors=defs.sensors, resources=defs.resources,
                          executor=defs.executor, loggers=defs.loggers, metadata=defs.metadata)
