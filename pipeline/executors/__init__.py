"""Executors run a plan: ``local`` (processes on this machine) and ``ray`` (Ray Data)."""
