"""Readers, writers and input sharding."""
