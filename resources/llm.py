"""``LLMResource``: the LLM engine (distillery_assets.llm) as a Dagster resource.

Fields mirror :class:`distillery_assets.llm.LLMSettings` (see its docstring for the DISTILLERY_LLM_*
variables). Secrets are never fields: ``api_key_env`` holds the NAME of the variable with the key, read
when the first call is made. ``get_client(context)`` returns an LLMClient whose progress lines go to
``context.log`` and whose usage rows (every call, cache hits included) go to the catalogue's
``llm_calls`` table tagged with ``context.run_id``.
"""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg
from pydantic import Field

from distillery_assets.llm import ConfigError, LLMClient, LLMSettings, build_client
from resources.catalog import CatalogResource

log = logging.getLogger(__name__)


class LLMResource(dg.ConfigurableResource):
    """One LLM entry point for every asset: cache, rate limits, retries and JSON checks included."""

    provider: str = Field(default="local", description="local | openai | anthropic | fal")
    model: str | None = Field(default=None, description="model id; None = the provider's default")
    base_url: str | None = Field(default=None, description="OpenAI-compatible (or Anthropic) base URL")
    api_key_env: str | None = Field(default=None, description="NAME of the env var holding the API key")
    concurrency: int | None = Field(default=None, description="requests in flight (default 4; 1 for local)")
    rpm: int = Field(default=0, description="requests per minute, 0 = unlimited")
    tpm: int = Field(default=0, description="tokens per minute, 0 = unlimited")
    timeout_s: float = 120.0
    max_attempts: int = 5
    json_reasks: int = 2
    backoff_s: float = 1.0
    gguf: str | None = Field(default=None, description="GGUF path for provider local (default: SmolLM2)")
    n_ctx: int = 4096
    n_threads: int | None = None
    cache: bool = True
    catalog: CatalogResource | None = None

    @classmethod
    def from_env(cls, catalog: CatalogResource | None = None, **overrides: Any) -> LLMResource:
        settings = LLMSettings.from_env(**overrides)
        return cls(**settings.model_dump(), catalog=catalog)

    def settings(self) -> LLMSettings:
        try:
            return LLMSettings.model_validate({name: getattr(self, name) for name in LLMSettings.model_fields})
        except ValueError as exc:
            raise ConfigError(f"invalid LLMResource configuration: {exc}") from exc

    def get_client(self, context: Any | None = None) -> LLMClient:
        logger = getattr(context, "log", None) or log
        run_id = getattr(context, "run_id", None)
        sink = self.catalog.get().record_llm_calls if self.catalog is not None else None
        return build_client(self.settings(), usage_sink=sink, progress=lambda p: logger.info(p.line()),
                            run_id=run_id, logger=logger)
