"""thresher's engine: recipes, the operator framework, planning, executors, IO and the ledger."""

from thresher import __version__  # noqa: F401 - the version is written once, in thresher/__init__.py
