"""Estimated cost per call: USD per million input / output tokens for models we are likely to use.

Prices are list prices as published by the vendors (standard tier, short context; checked December 2026
against the Claude models pages and OpenAI's pricing page); unknown models cost ``None`` (unknown, not free).
Local models cost 0. A provider that reports its own cost (fal/OpenRouter) wins. A reply from a provider's
batch API costs ``BATCH_DISCOUNT[provider]`` times the list price: half, for Anthropic's Message Batches ("50% of
standard API prices", the batch-processing guide) and OpenAI's Batch API ("50% cost discount", the batch
guide). The table holds the providers' defaults and no model past its end of life by the installed SDKs' own tables
(``distillery_assets.llm.lifecycle``; tests/unit/test_llm_real_services.py checks both).
"""

from __future__ import annotations

PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-5.5": (5.00, 30.00),
    "gpt-5.4": (2.50, 15.00),
    "gpt-5.4-mini": (0.75, 4.50),  # the openai provider's default
    "gpt-5.4-nano": (0.20, 1.25),  # shutdown 2027-04-01
    "gpt-4o-mini": (0.15, 0.60),  # shutdown 2027-01-14 (still the filters' reference oracle)
    "gpt-4o": (2.50, 10.00),  # shutdown 2027-01-14
    "gpt-4.1": (2.00, 8.00),  # shutdown 2027-01-14
    "gpt-4.1-mini": (0.40, 1.60),  # shutdown 2027-01-14
    "claude-sonnet-5-5": (2.00, 10.00),  # the anthropic provider's default
    "claude-sonnet-5": (2.00, 10.00),
    "claude-opus-5-5": (4.00, 20.00),
    "claude-opus-5": (5.00, 25.00),
    "claude-sonnet-4-6": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "qwen/qwen-2.5-72b-instruct": (0.12, 0.39),
    "qwen/qwen3-235b-a22b": (0.13, 0.60),
}


# the price of a batch API reply as a share of the online list price, per provider with a batch API
BATCH_DISCOUNT: dict[str, float] = {"anthropic": 0.5, "openai": 0.5}


def _lookup(model: str) -> tuple[float, float] | None:
    name = model.lower()
    if name in PRICES_PER_MTOK:
        return PRICES_PER_MTOK[name]
    # dated snapshots / router prefixes: "claude-sonnet-4-5-20250929", "openai/gpt-4o-mini"
    for known in sorted(PRICES_PER_MTOK, key=len, reverse=True):
        if name.startswith(known) or name.endswith("/" + known):
            return PRICES_PER_MTOK[known]
    return None


def estimate_cost(provider: str, model: str, input_tokens: int, output_tokens: int, *,
                  batch: bool = False) -> float | None:
    """USD for one reply at list price (``batch``: at the provider's batch price); None when unknown."""
    if provider == "local":
        return 0.0
    price = _lookup(model)
    if price is None:
        return None
    share = BATCH_DISCOUNT.get(provider, 1.0) if batch else 1.0
    return round((input_tokens * price[0] + output_tokens * price[1]) * share / 1_000_000, 8)
