"""thresher's engine: recipes, the operator framework, planning, executors, IO and the ledger."""

__version__ = "0.1.0"
