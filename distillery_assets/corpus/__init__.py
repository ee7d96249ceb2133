"""The corpus pipeline's domain library (no Dagster imports).

* :mod:`.tables`: the editable prompt tables (``data/config/corpus/prompt_tables.yaml``), validated.
* :mod:`.prompts`: the tables rendered into leaf directories and ``prompts.txt`` text.
* :mod:`.layout`: where the corpus lives on disk (``$DISTILLERY_CORPUS_ROOT`` or ``data_dir()/corpus``).
* :mod:`.prompts_file`: reading ``prompts.txt`` back, rejecting bad lines with file and line.
* :mod:`.plan`: which ``.corpus`` files of a partition exist and which are missing.
* :mod:`.generate`: turning missing files into LLM requests and writing the answers atomically.
* :mod:`.quality`: word counts and the prose checks used by the asset checks.
"""
