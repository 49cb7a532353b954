"""Curation and selection: ops that choose which rows to keep — by score, diversity, their fields, or
at random."""
