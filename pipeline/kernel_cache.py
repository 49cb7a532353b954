"""Where numba keeps thresher's compiled kernels.

Every numba kernel is compiled with ``cache=True``: the first run on a machine compiles it (seconds
per kernel, in each worker that uses it) and every later run loads the machine code from numba's
cache. Numba's default cache is the ``__pycache__`` folder beside the source, then a per-user folder
(``~/.cache/numba``) where that is not writable — an install in a read-only ``site-packages`` (a
container image, a shared cluster environment) with a read-only home directory has numba find no
cache folder at all, and importing a kernel module fails ("no locator available"). ``configure``
points numba at ``$THRESHER_CACHE/numba`` whenever the sources' folder is not writable
(``thresher.__init__`` calls it before numba is imported, so pool and Ray workers, which import
thresher first, agree). ``NUMBA_CACHE_DIR``, where set, is always respected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OPERATORS = Path(__file__).resolve().parent.parent / "operators"  # the kernels' sources (both layouts)


def _writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (created if missing), as numba itself checks:
    ``os.access`` says yes to root on a read-only mount's permission bits but not to a write."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".thresher-probe-{os.getpid()}"
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
        probe.unlink()
        return True
    except OSError:
        return False


def configure(operators_dir: Path = OPERATORS) -> str | None:
    """Set ``NUMBA_CACHE_DIR`` to ``$THRESHER_CACHE/numba`` when numba could not cache beside the
    kernels' sources; returns the folder numba caches in when this chose it (else None: numba's
    default, or the user's ``NUMBA_CACHE_DIR``)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    if _writable(operators_dir / "common" / "__pycache__"):
        return None
    from thresher.pipeline.assets import cache_dir

    folder = str(cache_dir("numba"))
    os.environ["NUMBA_CACHE_DIR"] = folder
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba already imported (a notebook): its kernels decorated after this see it
        config.CACHE_DIR = folder
    return folder
