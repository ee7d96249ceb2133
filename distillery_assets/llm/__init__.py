"""The LLM engine: one call shape for local (llama.cpp), OpenAI-compatible, Anthropic and fal providers,
with on-disk cache, rate limits, retries, JSON validation and usage accounting. No Dagster imports here;
the Dagster resource is ``resources.llm.LLMResource``.
"""

from distillery_assets.llm.client import LLMClient
from distillery_assets.llm.errors import ConfigError, ProviderError, RetryableError
from distillery_assets.llm.progress import Progress
from distillery_assets.llm.settings import LLMSettings, build_client
from distillery_assets.llm.types import ChatMessage, LLMRequest, LLMResult, Usage

__all__ = [
    "ChatMessage", "ConfigError", "LLMClient", "LLMRequest", "LLMResult", "LLMSettings", "Progress",
    "ProviderError", "RetryableError", "Usage", "build_client",
]
