"""Poetry pipeline domain library (no Dagster imports).

Modules, one job each:

* ``settings``      -- load the editable configs under ``data/config/poetry/`` (personas, prompts, volumes).
* ``raw_poems``     -- read good/bad poems from ``.txt`` / ``.jsonl`` files, turning bad input into rejects.
* ``gutenberg``     -- split a public-domain collection (Dickinson) into single poems for the shipped sample.
* ``tasks``         -- build the LLM requests for T1..T6, poet pairs and cliché drafts; turn results into records.
* ``quality_gate``  -- per-task checks on each task's own text field, with reasons.
* ``datasets``      -- gated records -> one role's ChatML examples and split files (through the shared
  ``distillery_assets.datasets.chatml``: dedupe, split rule, leakage and length checks).
* ``session``       -- the educator/poet loop over two chat callables.
* ``gguf_chat``     -- llama-cpp-python adapter that turns a GGUF file into such a chat callable.
* ``tutor``         -- CLI: ``python -m distillery_assets.poetry.tutor "Write a poem about winter light"``.
"""
