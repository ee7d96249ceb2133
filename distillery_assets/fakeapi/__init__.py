"""Real HTTP servers on 127.0.0.1 that speak the OpenAI, Anthropic and fal queue APIs closely enough for
the official SDKs. Tests and benchmarks use them to exercise the real client code paths offline:
latency, concurrency, and scripted faults (429 + Retry-After, 500, timeout, malformed JSON, truncation).

    with serve_openai_compat(latency_s=0.2, script=[("429", 1), ("500",)]) as srv:
        ...  # srv.base_url, srv.request_count, srv.requests
"""

from distillery_assets.fakeapi.anthropic_api import serve_anthropic
from distillery_assets.fakeapi.fal_queue import serve_fal_queue
from distillery_assets.fakeapi.openai_compat import serve_openai_compat
from distillery_assets.fakeapi.replies import default_reply, schema_example

__all__ = ["default_reply", "schema_example", "serve_anthropic", "serve_fal_queue", "serve_openai_compat"]
