"""Thyme: a small language model trained from scratch (seed 002), as a Dagster-free library."""
