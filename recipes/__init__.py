"""Shipped recipes (YAML), found by name: ``thresher run quickstart``."""
