"""Tests on the real data sets in ``$THRESHER_REAL_DATA`` (default: ``shared/data`` beside the
checkout); skipped cleanly where they are absent. Every test here is marked ``realdata``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("THRESHER_REAL_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Mark the tests of this folder ``realdata`` (so ``-m "not realdata"`` leaves them out) without
    a ``pytestmark`` line in every module. pytest hands this hook every collected item, not only
    this folder's."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.realdata)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
