"""thresher's built-in operators, one family per module: ``clean/``, ``filter/``, ``dedup/``."""
