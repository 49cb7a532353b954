"""Curation and selection: global ops that choose which rows to keep."""
