"""Semantic ops on sentence embeddings: ``embed`` (a vector column) and ``semantic_dedup`` (SemDeDup)."""
