"""Test support shared by the tests and the benchmarks (not shipped: pyproject packages only the product).

* ``tests.support.fakeapi`` -- loopback fakes of the OpenAI-compatible, Anthropic and fal queue APIs
  (``python -m tests.support.fakeapi serve|throughput`` from the repository root).
"""
