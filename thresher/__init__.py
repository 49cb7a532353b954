"""thresher: turn raw text into LLM training data (pretraining, SFT, DPO) and size the jobs that
use it.

Installed, thresher is this one package. Its parts are the repository's top-level folders, mapped
under it by ``pyproject.toml`` (``package-dir``): ``thresher.pipeline`` (the engine),
``thresher.operators`` (the built-in ops), ``thresher.capacity`` (the planner),
``thresher.cluster`` (Ray jobs and cluster templates) and ``thresher.recipes`` (shipped recipes).
``thresher.api`` is the public API for op authors and notebook users; everything else is internal.
"""

from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.1.0"  # the one place the version is written (pyproject reads it from here)

# Run from a source checkout without the package-dir map (a plain `pip install .` beside the
# checkout's tests, or no install at all), the parts are the folders beside this one.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "pipeline" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - a package's __path__

# numba's kernel cache: beside the sources, or $THRESHER_CACHE/numba where they are read-only
# (pipeline/kernel_cache.py); before any kernel module imports numba
from thresher.pipeline.kernel_cache import configure as _configure_kernel_cache  # noqa: E402

_configure_kernel_cache()
