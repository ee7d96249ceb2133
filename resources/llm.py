"""``LLMResource``: the LLM engine (distillery_assets.llm) as a Dagster resource.

Its config fields ARE :class:`distillery_assets.llm.LLMSettings`'s (generated from that one model, so a
new setting is added in one place; see its docstring for the DISTILLERY_LLM_* variables). Secrets are never
fields: ``api_key_env`` holds the NAME of the variable with the key, read when the first call is made.
``get_client(context)`` returns an LLMClient whose progress lines go to ``context.log`` and whose usage
rows (every call, cache hits included) go to the catalogue's ``llm_calls`` table tagged with
``context.run_id``: each row, and each provider call before it is sent, is written to the catalogue's spool
the moment it happens (``Catalog.usage_journal``), and the client's batches commit the spool; a kill loses
none (the next run records them, a call in flight as ``interrupted``).

Batch mode (``batch: true``, or DISTILLERY_LLM_BATCH=1, or an asset's own ``batch`` config passed as an override):
the client sends the step's cache misses through the provider's batch API (``distillery_assets.llm.batch``); each
batch gets an ``llm_batches`` row in the catalogue when it is sent (before the step waits on it) and when it ends,
its progress goes to the step's log, and the asset's metadata gets ``llm_batch_*``: the batch ids, the calls by
outcome, and the cost at the batch price against the same answers at online prices.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr, create_model

from distillery_assets.catalog import CatalogError
from distillery_assets.catalog.store import lock_timeout_s
from distillery_assets.llm import ConfigError, LLMClient, LLMSettings, build_client
from distillery_assets.llm.settings import lifecycle_warning
from resources.catalog import CatalogResource

log = logging.getLogger(__name__)


def _setting_fields() -> dict[str, Any]:
    fields = {}
    for name, info in LLMSettings.model_fields.items():
        annotation = str if name == "provider" else info.annotation  # Dagster config has no Literal type
        fields[name] = (annotation, Field(default=info.default, description=info.description))
    return fields


def _add_asset_metadata(context: Any, metadata: dict[str, Any]) -> None:
    """Add ``metadata`` to the materialization of every asset the step makes (nothing outside an asset step)."""
    add = getattr(context, "add_asset_metadata", None)
    if add is None:
        return
    try:
        keys = list(getattr(context, "selected_asset_keys", None) or [])
        if len(keys) <= 1:
            add(metadata)
        else:
            for key in keys:
                add(metadata, asset_key=key)
    except Exception as exc:  # an op, or a context without assets: the warning in the log still says it
        log.debug(f"LLM model lifecycle metadata not added: {exc}")


FORWARDED_LOGGERS = ("distillery_assets.threads",)
"""Library loggers whose lines reach the log of a step that asked for a client (``assets.logs.forward_logs``)."""

SINK_WAIT_S = 30.0  # the longest a batch of usage rows waits for a busy catalogue (they stay in the spool)
BATCH_ROW_WAIT_S = 10.0  # the longest a provider batch's row waits (the ledger under llm_cache holds it anyway)

_LLMSettingsFields = create_model("_LLMSettingsFields", __base__=dg.ConfigurableResource, **_setting_fields())


class LLMResource(_LLMSettingsFields):
    """One LLM entry point for every asset: cache, rate limits, retries and JSON checks included."""

    catalog: CatalogResource | None = None
    _clients: list = PrivateAttr(default_factory=list)
    _forwarding: ExitStack | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls, catalog: CatalogResource | None = None, **overrides: Any) -> LLMResource:
        settings = LLMSettings.from_env(**overrides)
        lifecycle_warning(settings, log)  # at start-up: a configured model past its end of life is named now
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
        if getattr(context, "log", None) is not None and self._forwarding is None:
            from assets.logs import forward_logs

            # a local model's thread changes (spare cores taken and given back) show in the step's log
            self._forwarding = ExitStack()
            self._forwarding.enter_context(forward_logs(context, FORWARDED_LOGGERS))
        run_id = getattr(context, "run_id", None)
        cat = self.catalog.get() if self.catalog is not None else None
        # the rows are journalled into the catalogue's spool as they are made: a batch only commits the spool
        # (briefly: a busy catalogue keeps them there, and the next batch or the step's end tries again)
        sink = (lambda rows: cat.commit(timeout_s=min(lock_timeout_s(), SINK_WAIT_S))) if cat is not None else None
        settings = self.settings(**overrides)
        client = build_client(settings, usage_sink=sink, progress=lambda p: logger.info(p.line()),
                              run_id=run_id, logger=logger)
        lifecycle = settings.model_lifecycle()
        if lifecycle is not None and context is not None:
            _add_asset_metadata(context, lifecycle.metadata())
        if cat is not None:
            client.usage_journal = cat.usage_journal()
        if client.batch_mode:
            if cat is not None:
                client.batch_sink = lambda event, row: cat.record_llm_batch(
                    event, {k: v for k, v in row.items() if k != "request_keys"},
                    timeout_s=min(lock_timeout_s(), BATCH_ROW_WAIT_S))
            if context is not None:
                client.on_batch_report = lambda metadata: _add_asset_metadata(context, metadata)
        self._clients.append(client)
        return client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the step's clients: their HTTP connections, thread pools, and usage rows not yet saved."""
        if self._forwarding is not None:
            self._forwarding.close()
            self._forwarding = None
        while self._clients:
            try:
                self._clients.pop().close()
            except Exception as exc:  # closing must never fail the step that used the client
                log.warning(f"closing an LLM client: {exc}")
        if self.catalog is not None:
            try:
                self.catalog.get().commit(timeout_s=min(lock_timeout_s(), SINK_WAIT_S))
            except CatalogError as exc:
                log.warning(f"LLM usage rows not in the catalogue yet: {exc}")
