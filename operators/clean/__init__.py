"""Cleaning mappers: text in, text out, one row per row (``text_chunk``: one row per chunk)."""
