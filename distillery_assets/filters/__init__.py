"""Filters (seed 004, "LLM Distillery"): versioned document scorers distilled from LLM labels.

Plain Python, no Dagster. See ``README.md`` in this folder for the modules and their interfaces.
Nothing is imported here so that importing one module never pulls in torch or the LLM client.
"""
