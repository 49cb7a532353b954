"""Cleaning mappers: text in, text out, one row per row."""
