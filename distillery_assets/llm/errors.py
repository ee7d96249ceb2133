"""What a provider call can end in, in the two kinds the client cares about: try again, or give up."""

from __future__ import annotations


class ProviderError(Exception):
    """A call failed in a way that retrying will not fix (bad request, auth, unknown model...)."""


class RetryableError(ProviderError):
    """A call failed in a way that may pass later (429, 5xx, timeout, dropped connection).

    ``retry_after`` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(ValueError):
    """The LLM settings are incomplete or contradictory (e.g. the API key variable is unset)."""


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (numeric form), or None."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is not None:
            return max(0.0, float(value))
    except (TypeError, ValueError):
        return None
    return None


def retryable_status(status: int | None) -> bool:
    return status is not None and (status in (408, 409, 425, 429) or status >= 500)
