"""LLM settings from the environment, and ``build_client`` that turns them into an LLMClient.

=============================  ==========================================================  ===============
Variable                       Meaning                                                      Default
=============================  ==========================================================  ===============
DISTILLERY_LLM_PROVIDER        ``local`` | ``openai`` | ``anthropic`` | ``fal``             ``local``
DISTILLERY_LLM_MODEL           model id for the provider (openai/anthropic/fal)             per provider:
                                                                                            gpt-5.4-mini,
                                                                                            claude-sonnet-5-5,
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
DISTILLERY_LLM_LENGTH_RETRIES  asks again with a larger budget after finish_reason=length   1
DISTILLERY_LLM_LENGTH_GROWTH   max_tokens multiplier for each of those asks                 2.0
DISTILLERY_LLM_CLAIM_WAIT_S    seconds a request waits for another run asking the same      600
                               one (then it is skipped, a failure "claimed")
DISTILLERY_LLM_GGUF            GGUF file for provider ``local``                             embedded
                                                                                            SmolLM2-135M-Instruct
DISTILLERY_LLM_N_CTX           context length for provider ``local``                        4096
DISTILLERY_LLM_N_THREADS       CPU threads for provider ``local``, decode and prompt        the thread
                               (unset: ``distillery_assets.threads``, the one policy,       policy
                               overridden by DISTILLERY_THREADS)
DISTILLERY_LLM_CACHE           ``1`` cache answers under data/llm_cache, ``0`` to disable   1
DISTILLERY_LLM_BATCH           ``1``: a task's cache misses go through the provider's       0
                               batch API (anthropic, openai; half price, answers within
                               24 h; ``llm.batch``); local and fal have none: an error
DISTILLERY_LLM_BATCH_POLL_S    seconds between looks at an open batch                        30
DISTILLERY_LLM_BATCH_WAIT_S    longest wait for one batch, then the run ends and the next   0 (until it
                               run resumes polling it (0: until it ends)                    ends)
DISTILLERY_LLM_BATCH_RETRY_ONLINE ``1``: an errored/expired/canceled batch item is asked    0 (the next
                               again online rather than in the next batch                  batch)
DISTILLERY_LLM_BATCH_RESUBMIT_UNKNOWN ``1``: calls whose earlier submission got no answer   0 (named
                               and cannot be told apart from other batches (Anthropic:     failure
                               several of its size since then) are sent again, perhaps     batch_submission_
                               paid twice                                                  unknown)
FAL_KEY (or the named var)     fal key; also read from a ``FAL_KEY=`` line in ~/.env        -
=============================  ==========================================================  ===============

Keys are read from the environment when the first call is made and never stored in settings.

A configured model that an installed SDK's own table (``distillery_assets.llm.lifecycle``) lists as past its
end of life, or deprecated, is named in a warning when a client is built (``lifecycle_warning``), and the
Dagster resource adds ``llm_model_end_of_life`` to the metadata of the asset that uses it.
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
    """Every LLM setting, once: ``LLMSettings.from_env()`` reads DISTILLERY_LLM_*; the Dagster resource
    ``resources.llm.LLMResource`` takes its fields from this model."""

    provider: ProviderName = Field(default="local", description="local | openai | anthropic | fal")
    model: str | None = Field(default=None, description="model id; None = the provider's default")
    base_url: str | None = Field(default=None, description="OpenAI-compatible (or Anthropic) base URL")
    api_key_env: str | None = Field(default=None, description="NAME of the env var holding the API key (never the key)")
    concurrency: int | None = Field(default=None, ge=1, le=256, description="requests in flight (default 4; 1 for local)")
    rpm: int = Field(default=0, ge=0, description="requests per minute, 0 = unlimited")
    tpm: int = Field(default=0, ge=0, description="tokens per minute, 0 = unlimited")
    timeout_s: float = Field(default=120.0, gt=0, description="per-attempt timeout in seconds")
    max_attempts: int = Field(default=5, ge=1, le=20, description="attempts per call on 429/5xx/timeout/connection errors")
    json_reasks: int = Field(default=2, ge=0, le=10, description="re-asks after a reply that is not schema-valid JSON")
    length_retries: int = Field(default=1, ge=0, le=5,
                                description="asks again, with a larger max_tokens, after a reply cut off at max_tokens")
    length_growth: float = Field(default=2.0, ge=1.0, le=8.0, description="max_tokens multiplier for each such ask")
    claim_wait_s: float = Field(default=600.0, ge=0,
                                description="seconds a request waits for another run asking the same one, then skips it")
    backoff_s: float = Field(default=1.0, ge=0, description="first retry delay in seconds (doubles, with jitter, to 60)")
    gguf: str | None = Field(default=None, description="GGUF path for provider local (default: SmolLM2)")
    n_ctx: int = Field(default=4096, ge=256, description="context length for provider local")
    n_threads: int | None = Field(default=None, ge=1,
                                   description="CPU threads for provider local (None: distillery_assets.threads)")
    cache: bool = Field(default=True, description="cache answers under data/llm_cache")
    batch: bool = Field(default=False, description="send a task's cache misses through the provider's batch API "
                        "(anthropic, openai: half price, answers within 24 h); local and fal have none (an error)")
    batch_poll_s: float = Field(default=30.0, gt=0, description="seconds between looks at an open batch")
    batch_wait_s: float = Field(default=0.0, ge=0, description="longest wait for one batch (0: until it ends); the "
                                "next run resumes polling a batch left open")
    batch_retry_online: bool = Field(default=False, description="ask an errored/expired/canceled batch item again "
                                     "online instead of in the next batch")
    batch_resubmit_unknown: bool = Field(default=False, description="send again the calls of a submission whose "
                                         "answer was lost and that cannot be told apart from other batches (may "
                                         "pay twice); otherwise they fail as batch_submission_unknown")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> LLMSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in cls.model_fields:
            raw = env.get(ENV_PREFIX + field.upper())
            if raw is not None and raw.strip() != "":
                values[field] = raw.strip()
        for flag in ("cache", "batch", "batch_retry_online", "batch_resubmit_unknown"):
            if flag in values:
                values[flag] = str(values[flag]).lower() not in ("0", "false", "no", "off")
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

    def resolved_model(self) -> str | None:
        """The model a request without its own will use: ``model``, else the provider's default (None: local)."""
        if self.provider == "local":
            return None
        return self.model or build_provider(self).model_id(None)

    def model_lifecycle(self):
        """The resolved model's end of life by the installed SDK's table (``llm.lifecycle.ModelLifecycle``), or
        None when no table lists it."""
        from distillery_assets.llm.lifecycle import check

        return check(self.provider, self.resolved_model())


def lifecycle_warning(settings: LLMSettings, logger=None) -> str | None:
    """Log (warning) and return the sentence for a configured model that is deprecated or past its end of
    life by the installed SDK's own table; None (and no log line) for a current or unlisted model."""
    import logging

    lifecycle = settings.model_lifecycle()
    if lifecycle is None:
        return None
    message = lifecycle.message()
    (logger or logging.getLogger(__name__)).warning(message)
    return message


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
    if provider is None:
        lifecycle_warning(settings, logger)
    provider = provider or build_provider(settings)
    batch = None
    if settings.batch:
        from distillery_assets.llm.providers.batches import batch_api

        batch = batch_api(provider)  # a ConfigError for a provider without a batch API (local, fal)
        if not settings.cache:
            raise ConfigError("batch mode needs the response cache: set DISTILLERY_LLM_CACHE=1 (or the LLM "
                              "resource's cache: true) with DISTILLERY_LLM_BATCH=1")
    return LLMClient(
        provider,
        cache_dir=data_dir() / "llm_cache" if settings.cache else None,
        concurrency=settings.effective_concurrency, rpm=settings.rpm or None, tpm=settings.tpm or None,
        timeout_s=settings.timeout_s, max_attempts=settings.max_attempts, json_reasks=settings.json_reasks,
        length_retries=settings.length_retries, length_growth=settings.length_growth,
        claim_wait_s=settings.claim_wait_s,
        backoff_initial_s=settings.backoff_s,
        usage_sink=usage_sink, progress=progress, run_id=run_id, logger=logger,
        scrubber=Scrubber([settings.key_env] if settings.key_env else []),
        batch_api=batch, batch_poll_s=settings.batch_poll_s, batch_wait_s=settings.batch_wait_s,
        batch_retry_online=settings.batch_retry_online, batch_resubmit_unknown=settings.batch_resubmit_unknown,
    )
