"""What the local executor's fork server does before it forks any worker (pipeline/executors/local.py).

The pool's workers are forked from one clean server process (multiprocessing's ``forkserver``
start method, https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods),
which imports the engine and the recipe's op modules once (``set_forkserver_preload``), then imports
this module last. Its import reads ``THRESHER_FORKSERVER_SETUP`` (JSON, written by the executor) and

- settles pyarrow's pandas probe as "no pandas" where every op of the recipe is built in
  (``passes.skip_pandas_probe``: otherwise each worker would import pandas, +25 MB);
- loads the recipe's numba kernels that are already in numba's cache (shipped or compiled by an
  earlier run), so the workers inherit the loaded machine code and LLVM's state instead of each
  loading them; a kernel not in the cache is left to the workers, which compile it in parallel
  (pipeline/precompile.py), as before.

Pages the workers inherit copy-on-write and never write count once, shared, in the tree's PSS.
Nothing here may raise: the fork server dies on anything but an ImportError in a preloaded module.
"""

from __future__ import annotations

import json
import os
import sys

from thresher.pipeline.executors.local import SETUP_ENV

DONE: dict = {}  # what setup did in this process (the server; a forked worker inherits it): for tests


def load_cached(kernel: str, signatures: tuple[str, ...] | list[str]) -> int:
    """Load the kernel's signatures that numba's cache holds into its dispatcher; compile nothing.
    Returns how many were loaded. Mirrors the cache branch of numba's ``Dispatcher.compile``
    (numba/core/dispatcher.py, 0.6x): ``_cache.load_overload``, then ``insert_user_function`` and
    ``add_overload`` as on a cache hit, so a later ``compile`` or call of that signature finds it."""
    import importlib

    from numba.core import sigutils
    from numba.core.compiler_lock import global_compiler_lock

    from thresher.pipeline.precompile import _namespace

    module, _, name = kernel.partition(":")
    dispatcher = getattr(importlib.import_module(module), name)
    ns = _namespace()
    loaded = 0
    with global_compiler_lock:
        for text in signatures:
            sig = eval(text, ns)  # noqa: S307 - numba type expressions from kernel_index or the op class
            args, _ = sigutils.normalize_signature(sig)
            if tuple(args) in dispatcher.overloads:
                continue
            cres = dispatcher._cache.load_overload(sig, dispatcher.targetctx)
            if cres is None:
                continue  # not cached: a worker compiles it (precompile), as without the server
            dispatcher._cache_hits[sig] += 1
            if not cres.objectmode:
                dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            dispatcher.add_overload(cres)
            loaded += 1
    return loaded


LOADER_LIBRARIES = ("libllvmlite",)  # what only loading or compiling kernels runs (numba's LLVM)


def drop_library_pages(names: tuple[str, ...] = LOADER_LIBRARIES) -> int:
    """Unmap the resident pages of the read-only, purely file-backed mappings of the shared libraries
    ``names`` (Linux ``madvise(MADV_DONTNEED)``; /proc/self/smaps says which): bytes dropped. After the
    kernels are loaded, the pool's workers only call them: LLVM's code (~66 MB of ``libllvmlite.so``
    touched while numba loaded a recipe's cached kernels) would stay in this process's resident set
    for the run. A page of such a mapping is the file's page in the page cache (the kernel reclaims
    it the same way under memory pressure): touched again (a kernel compiled later), it is mapped
    again from there. A mapping with anything written to it (``Anonymous`` > 0: relocations) or
    writable is left alone. No-op where there is no /proc or ``madvise``."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        text = open("/proc/self/smaps").read()  # noqa: SIM115 - read at once: madvise changes it
    except (OSError, AttributeError):
        return 0
    dropped = 0
    vma: list | None = None
    for line in [*text.splitlines(), "0-0 ---p 0 0:0 0"]:
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and len(head[1]) == 4:  # a mapping's first line
            if vma is not None and vma[3] == 0 and vma[4] > 0 and madvise(vma[0], vma[1] - vma[0], 4) == 0:
                dropped += vma[4]  # MADV_DONTNEED (4) done
            path = head[5] if len(head) > 5 else ""
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            wanted = "w" not in head[1] and any(n in os.path.basename(path) for n in names)
            vma = [lo, hi, path, 0, 0] if wanted else None
        elif vma is not None and head and head[0] == "Anonymous:":
            vma[3] = int(head[1]) * 1024
        elif vma is not None and head and head[0] == "Rss:":
            vma[4] = int(head[1]) * 1024
    return dropped


def setup(spec: dict) -> dict:
    """Do what ``spec`` asks ({"no_pandas": bool, "kernels": [[kernel, [signature, ...]], ...]});
    returns what was done, for tests."""
    done: dict = {"no_pandas": False, "kernels": {}}
    if spec.get("no_pandas"):
        from thresher.pipeline.executors.passes import skip_pandas_probe

        skip_pandas_probe()
        done["no_pandas"] = True
    for kernel, sigs in spec.get("kernels", ()):
        try:
            done["kernels"][kernel] = load_cached(kernel, sigs)
        except Exception as e:  # noqa: BLE001 - only a head start: the workers load or compile it
            sys.stderr.write(f"note: the fork server could not load {kernel}: {type(e).__name__}: {e}\n")
    if any(done["kernels"].values()) and os.environ.get("THRESHER_DROP_LLVM", "1") != "0":
        done["dropped"] = drop_library_pages()
    return done


def settle() -> None:
    """Before the first fork: move every object there is to the garbage collector's permanent
    generation, so that a collection in a worker does not write to (and so copy) the pages of the
    objects it inherited, and hand the heap's free pages back to the system (Python docs, ``gc.freeze``:
    "If a process will fork() without exec() ...")."""
    import gc

    from thresher.pipeline.executors.passes import trim_heap

    gc.collect()
    gc.freeze()
    trim_heap()


def _from_env() -> None:
    raw = os.environ.pop(SETUP_ENV, None)
    if not raw:
        return
    try:
        DONE.update(setup(json.loads(raw)))
        settle()
    except Exception as e:  # noqa: BLE001 - the server must start: the workers do without
        sys.stderr.write(f"note: fork server setup skipped: {type(e).__name__}: {e}\n")


_from_env()
