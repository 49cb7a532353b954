"""Deduplication: global ops (fingerprint -> resolve -> apply)."""
