"""Theme pipeline domain library (no Dagster): where each step's logic lives.

books       Gutenberg sources (local dir + manifest, HF dataset, mirror), licence stripping, cutoff rule
chunking    paragraph chunks with stable ids ``<book id>-<index>``
keywords    the 16 theme keyword sets; seed-exact counting (regex oracle + Hyperscan counter)
config      loaders for data/config/theme/ (personas, query themes, anachronisms)
validate    checks on generated exchanges (length, artefacts, markdown, anachronisms, themes, near-dups)
generate    persona ChatML generation: one LLM task (``ExchangeTask``) run by ``llm.task.run_task``, one
            journal line per finished example, the repeated-question pass in row order
setup       assembles a generator from the config files (journal keyed by a setup fingerprint)
modelbench  OpenAI-compatible endpoint benchmark (tok/s, TTFT, hours per 1,000, 1-5 rating)
plots       PNG charts for asset metadata

The train/val split and its checks are the shared ``distillery_assets.datasets.chatml``.
"""
