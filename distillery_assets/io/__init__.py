"""File helpers shared by every pipeline: atomic writes and JSONL reading with line-numbered errors."""

from distillery_assets.io.atomic import atomic_write_bytes, atomic_write_text, atomic_path, atomic_write_jsonl
from distillery_assets.io.jsonl import JsonlError, iter_jsonl, iter_jsonl_lines, read_jsonl

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_jsonl",
    "atomic_write_text",
    "JsonlError",
    "iter_jsonl",
    "iter_jsonl_lines",
    "read_jsonl",
]
