"""LLM settings from the environment, and ``build_client`` that turns them into an LLMClient.

=============================  ==========================================================  ===============
Variable                       Meaning                                                      Default
=============================  ==========================================================  ===============
DISTILLERY_LLM_PROVIDER        ``local`` | ``openai`` | ``anthropic`` | ``fal``             ``local``
DISTILLERY_LLM_MODEL           model id for the provider (openai/anthropic/fal)             per provider:
                                                                                            gpt-4o-mini,
                                                                                            claude-sonnet-4-5,
                                                                                            qwen/qwen-2.5-72b-instruct
DISTILLERY_LLM_BASE_URL        base URL of an OpenAI-compatible (or Anthropic) server,      provider's own
                               e.g. https://openrouter.ai/api/v1, http://localhost:1234/v1
DISTILLERY_LLM_API_KEY_ENV     NAME of the variable that holds the API key (never the key)  OPENAI_API_KEY /
                                                                                            ANTHROPIC_API_KEY /
                                                                                            FAL_KEY
DISTILLERY_LLM_CONCURRENCY     requests in flight at once                                   4 (1 for local)
DISTILLERY_LLM_RPM             requests per minute (0 = unlimited)                          0
DISTILLERY_LLM_TPM             tokens per minute, prompt + completion (0 = unlimited)       0
DISTILLERY_LLM_TIMEOUT_S       per-attempt timeout in seconds                               120
DISTILLERY_LLM_MAX_ATTEMPTS    attempts per call on 429/5xx/timeout/connection errors       5
DISTILLERY_LLM_BACKOFF_S       first retry delay in seconds (doubles, with jitter, to 60)  1.0
DISTILLERY_LLM_JSON_REASKS     re-asks after a reply that is not schema-valid JSON          2
DISTILLERY_LLM_GGUF            GGUF file for provider ``local``                             embedded
                                                                                            SmolLM2-135M-Instruct
DISTILLERY_LLM_N_CTX           context length for provider ``local``                        4096
DISTILLERY_LLM_N_THREADS       CPU threads for provider ``local``                           os.cpu_count()
DISTILLERY_LLM_CACHE           ``1`` cache answers under data/llm_cache, ``0`` to disable   1
FAL_KEY (or the named var)     fal key; also read from a ``FAL_KEY=`` line in ~/.env        -
=============================  ==========================================================  ===============

Keys are read from the environment when the first call is made and never stored in settings.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field

from distillery_assets.llm.client import LLMClient, UsageSink
from distillery_assets.llm.errors import ConfigError
from distillery_assets.llm.progress import ProgressCallback
from distillery_assets.llm.scrub import Scrubber

ProviderName = Literal["local", "openai", "anthropic", "fal"]
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "fal": "FAL_KEY", "local": ""}
ENV_PREFIX = "DISTILLERY_LLM_"


class LLMSettings(BaseModel):
    provider: ProviderName = "local"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int | None = Field(default=None, ge=1, le=256)
    rpm: int = Field(default=0, ge=0)
    tpm: int = Field(default=0, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    json_reasks: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0)
    gguf: str | None = None
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    cache: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> LLMSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in cls.model_fields:
            raw = env.get(ENV_PREFIX + field.upper())
            if raw is not None and raw.strip() != "":
                values[field] = raw.strip()
        if "cache" in values:
            values["cache"] = str(values["cache"]).lower() not in ("0", "false", "no", "off")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigError(f"invalid DISTILLERY_LLM_* setting: {exc}") from exc

    @property
    def key_env(self) -> str:
        return self.api_key_env or DEFAULT_KEY_ENV[self.provider]

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency or (1 if self.provider == "local" else 4)


def build_provider(settings: LLMSettings):
    if settings.provider == "local":
        from distillery_assets.llm.providers.local import LocalProvider

        return LocalProvider(settings.gguf or settings.model, n_ctx=settings.n_ctx, n_threads=settings.n_threads)
    if settings.provider == "openai":
        from distillery_assets.llm.providers.openai_compat import OpenAIProvider

        return OpenAIProvider(api_key_env=settings.key_env, base_url=settings.base_url,
                              default_model=settings.model, timeout_s=settings.timeout_s)
    if settings.provider == "anthropic":
        from distillery_assets.llm.providers.anthropic_messages import AnthropicProvider

        return AnthropicProvider(api_key_env=settings.key_env, base_url=settings.base_url,
                                 default_model=settings.model, timeout_s=settings.timeout_s)
    if settings.provider == "fal":
        from distillery_assets.llm.providers.fal_router import FalProvider

        return FalProvider(api_key_env=settings.key_env, default_model=settings.model, timeout_s=settings.timeout_s)
    raise ConfigError(f"unknown LLM provider {settings.provider!r}")


def build_client(settings: LLMSettings | None = None, usage_sink: UsageSink | None = None,
                 progress: ProgressCallback | None = None, *, run_id: str | None = None, logger=None,
                 provider=None) -> LLMClient:
    """The LLMClient for ``settings`` (default: from the environment). ``provider`` overrides for tests."""
    from distillery_assets.paths import data_dir

    settings = settings or LLMSettings.from_env()
    return LLMClient(
        provider or build_provider(settings),
        cache_dir=data_dir() / "llm_cache" if settings.cache else None,
        concurrency=settings.effective_concurrency, rpm=settings.rpm or None, tpm=settings.tpm or None,
        timeout_s=settings.timeout_s, max_attempts=settings.max_attempts, json_reasks=settings.json_reasks,
        backoff_initial_s=settings.backoff_s,
        usage_sink=usage_sink, progress=progress, run_id=run_id, logger=logger,
        scrubber=Scrubber([settings.key_env] if settings.key_env else []),
    )
