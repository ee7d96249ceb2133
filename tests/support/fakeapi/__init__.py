"""Real HTTP servers on 127.0.0.1 that speak the OpenAI, Anthropic and fal queue APIs closely enough for
the official SDKs. Tests and benchmarks use them to exercise the real client code paths offline:
latency, concurrency, and scripted faults (429 + Retry-After, 500, timeout, malformed JSON, truncation). The
Anthropic and OpenAI fakes also speak their batch APIs (Message Batches; Files + Batch), with a batch latency,
injected ``errored``/``expired``/``canceled``/``invalid`` items (``replies.fail_first``) and a counter of every
submission of each prompt (``srv.submissions``).

    with serve_openai_compat(latency_s=0.2, script=[("429", 1), ("500",)]) as srv:
        ...  # srv.base_url, srv.request_count, srv.requests
"""

from tests.support.fakeapi.anthropic_api import serve_anthropic
from tests.support.fakeapi.fal_queue import serve_fal_queue
from tests.support.fakeapi.openai_compat import serve_openai_compat
from tests.support.fakeapi.replies import default_reply, schema_example

__all__ = ["default_reply", "schema_example", "serve_anthropic", "serve_fal_queue", "serve_openai_compat"]
