"""``LLMResource``: the LLM engine (distillery_assets.llm) as a Dagster resource.

Its config fields ARE :class:`distillery_assets.llm.LLMSettings`'s (generated from that one model, so a
new setting is added in one place; see its docstring for the DISTILLERY_LLM_* variables). Secrets are never
fields: ``api_key_env`` holds the NAME of the variable with the key, read when the first call is made.
``get_client(context)`` returns an LLMClient whose progress lines go to ``context.log`` and whose usage
rows (every call, cache hits included) go to the catalogue's ``llm_calls`` table tagged with
``context.run_id``.
"""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr, create_model

from distillery_assets.llm import ConfigError, LLMClient, LLMSettings, build_client
from resources.catalog import CatalogResource

log = logging.getLogger(__name__)


def _setting_fields() -> dict[str, Any]:
    fields = {}
    for name, info in LLMSettings.model_fields.items():
        annotation = str if name == "provider" else info.annotation  # Dagster config has no Literal type
        fields[name] = (annotation, Field(default=info.default, description=info.description))
    return fields


_LLMSettingsFields = create_model("_LLMSettingsFields", __base__=dg.ConfigurableResource, **_setting_fields())


class LLMResource(_LLMSettingsFields):
    """One LLM entry point for every asset: cache, rate limits, retries and JSON checks included."""

    catalog: CatalogResource | None = None
    _clients: list = PrivateAttr(default_factory=list)

    @classmethod
    def from_env(cls, catalog: CatalogResource | None = None, **overrides: Any) -> LLMResource:
        settings = LLMSettings.from_env(**overrides)
        return cls(**settings.model_dump(), catalog=catalog)

    def settings(self, **overrides: Any) -> LLMSettings:
        """The resource's settings, with ``overrides`` (a per-asset provider, base_url or model) on top."""
        try:
            return LLMSettings.model_validate({**{name: getattr(self, name) for name in LLMSettings.model_fields},
                                               **overrides})
        except ValueError as exc:
            raise ConfigError(f"invalid LLMResource configuration: {exc}") from exc

    def get_client(self, context: Any | None = None, **overrides: Any) -> LLMClient:
        """A client of the resource's settings (``overrides`` on top: a second oracle's provider or model); it
        is closed with the step's other clients when the step ends."""
        logger = getattr(context, "log", None) or log
        run_id = getattr(context, "run_id", None)
        sink = self.catalog.get().record_llm_calls if self.catalog is not None else None
        client = build_client(self.settings(**overrides), usage_sink=sink, progress=lambda p: logger.info(p.line()),
                              run_id=run_id, logger=logger)
        self._clients.append(client)
        return client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the step's clients: their HTTP connections, thread pools, and usage rows not yet saved."""
        while self._clients:
            try:
                self._clients.pop().close()
            except Exception as exc:  # closing must never fail the step that used the client
                log.warning(f"closing an LLM client: {exc}")
