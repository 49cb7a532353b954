"""Compiled kernels shipped with thresher, so that a first-ever run loads them instead of compiling.

A first run on a machine used to compile every numba kernel its ops call: ~20 CPU seconds for the
``fineweb`` recipe, 8x a warm run on 2,000 documents (docs/benchmarks.md, "Cold start"). Compiling
cannot be made that cheap, so the compiled code is shipped: ``shipped_kernels.zip`` beside this file
holds numba's own cache entries (index key, data file) of the kernels in ``kernel_index`` (all but
``HOST_TUNED``, whose generic code is measurably slower), compiled
for a generic x86-64 CPU (``NUMBA_CPU_NAME=generic``, numba docs "Cache sharing": code that runs on
any CPU of the architecture), with a manifest: numba's version, the Python version, the target
triple, and for each kernel the SHA-256 of every source file its compiled code can depend on (its
module and the thresher.operators modules that module imports, to any depth).

Before a run's first pass, ``seed`` puts the entries of the recipe's kernels into numba's cache
(wherever numba would cache them: ``__pycache__`` beside the sources, ``NUMBA_CACHE_DIR``, or
``$THRESHER_CACHE/numba``, pipeline/kernel_cache.py), through numba's own cache object of each
kernel, so numba then loads them like any kernel it compiled itself. An entry is seeded only when

- numba's version, Python's version (and ABI flags) and the target triple are the manifest's;
- every source file the kernel depends on has the content it was compiled from (so does numba's own
  index stamp, a hash of the kernel's file, https://numba.readthedocs.io/en/stable/developer/caching.html),
  and the kernel's bytecode hash, part of numba's index key, is the same;
- the cache has no entry of its own for that signature (a kernel compiled here is never replaced).

Otherwise the kernel is compiled on first use, as without this: a stale kernel is never loaded. The
entry is filed under this machine's CPU name in numba's key (the generic code runs on it; numba would
not look under "generic"), so later runs load it from the cache as usual. ``THRESHER_SHIPPED_KERNELS=0``
turns seeding off. Regenerate after changing a kernel (tests/pipeline/test_cold_start.py fails until):

    python -m thresher.pipeline.shipped_kernels --write

(it compiles every kernel in a child process with ``NUMBA_CPU_NAME=generic`` and an empty cache).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

BUNDLE = Path(__file__).with_name("shipped_kernels.zip")
# Not shipped, compiled here on first use: their generic x86-64 code took 1.46x the CPU of code
# compiled for this machine (minhash_dedup on 20,000 docs; the other ops' kernels were within noise,
# bench/cold_start.py --code-ops, docs/benchmarks.md "Cold start"), and they compile in ~1.4 s.
HOST_TUNED = frozenset({
    "thresher.operators.common.minhash:_band_keys",
    "thresher.operators.common.minhash:_signatures",
    "thresher.operators.common.minhash:_word_hashes",
})
OPERATORS = Path(__file__).resolve().parent.parent / "operators"  # the kernels' sources (both layouts)
_PKG = "thresher.operators"


# ------------------------------------------------------------------------------ sources and tags

def _module_file(module: str) -> Path | None:
    """The source file of a thresher.operators module (None for another package's)."""
    if module != _PKG and not module.startswith(_PKG + "."):
        return None
    parts = module.split(".")[2:]
    base = OPERATORS.joinpath(*parts)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path, module: str) -> set[str]:
    """The modules ``path`` imports (absolute names, anywhere in the file), as written: ``from a.b
    import c`` gives ``a.b`` and ``a.b.c`` (c may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
    return found


def dependencies(module: str) -> list[Path]:
    """The source files a kernel of ``module`` can depend on: its own and those of the
    thresher.operators modules it imports, to any depth (their jitted helpers and the global
    tables numba freezes into the caller's code). numba's own index stamp covers only the first."""
    todo, seen = [module], {}
    while todo:
        m = todo.pop()
        path = _module_file(m)
        if path is None or m in seen:
            continue
        seen[m] = path
        todo.extend(_imports(path, m))
    return sorted(set(seen.values()))


@lru_cache(maxsize=4096)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:  # keyed on the stat: a file edited in a run is re-read
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes(paths: Iterable[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        st = p.stat()
        out[p.relative_to(OPERATORS).as_posix()] = _sha256(p, st.st_mtime_ns, st.st_size)
    return out


def fingerprint(module: str) -> dict[str, str]:
    """{path relative to operators/: SHA-256} of ``dependencies(module)``."""
    return _hashes(dependencies(module))


def _current(deps: dict[str, str]) -> bool:
    """Whether the files a shipped kernel was compiled from still have that content. The files are
    the manifest's: an import added since is written in one of them, so it changed too."""
    try:
        return _hashes(OPERATORS / rel for rel in deps) == deps
    except OSError:
        return False


def host_tag() -> dict[str, str]:
    """What a shipped entry must have been built for: numba and Python versions, the target triple."""
    import llvmlite.binding as ll
    import numba

    return {"numba": numba.__version__, "python": f"{sys.version_info[0]}.{sys.version_info[1]}{getattr(sys, 'abiflags', '')}",
            "triple": ll.get_process_triple()}


@lru_cache(maxsize=4)
def _manifest(bundle: Path, mtime_ns: int) -> dict[str, Any] | None:
    try:
        with zipfile.ZipFile(bundle) as z:
            return json.loads(z.read("manifest.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def manifest(bundle: Path = BUNDLE) -> dict[str, Any] | None:
    try:
        return _manifest(bundle, bundle.stat().st_mtime_ns)
    except OSError:
        return None


# ---------------------------------------------------------------------------------------- seeding

def _dispatcher(kernel: str):
    import importlib

    module, _, name = kernel.partition(":")
    return getattr(importlib.import_module(module), name)


def _predicted_index(entry: dict[str, Any]) -> Path | None:
    """Where numba keeps the kernel's index (its locators, numba/core/caching.py), found without
    importing numba: a quick 'already cached here' before the import. None where unsure."""
    src = OPERATORS / entry["file"]
    name = entry["index"]
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    if cache_dir:
        sub = os.path.dirname(os.path.abspath(src))
        folder = Path(cache_dir) / f"{os.path.basename(sub)}_{hashlib.sha1(sub.encode()).hexdigest()}"
        return folder / name
    return src.parent / "__pycache__" / name


def seed(kernels: Iterable[str], bundle: Path = BUNDLE) -> dict[str, int]:
    """Put the shipped entries of ``kernels`` (``module:function``) into numba's cache where they
    are current and the cache has none of its own: {kernel: entries seeded}. Never raises: a kernel
    not seeded is compiled on first use, as before."""
    kernels = list(kernels)
    if os.environ.get("THRESHER_SHIPPED_KERNELS", "1") == "0" or not kernels:
        return {}
    man = manifest(bundle)
    if man is None:
        return {}
    todo = []
    for k in kernels:
        entry = man["kernels"].get(k)
        if entry is None:
            continue
        if not _current(entry["deps"]):
            continue  # a source it depends on changed: compile as usual
        index = _predicted_index(entry)
        if index is not None and index.is_file():
            continue  # cached here already (numba checks it is current when it loads)
        todo.append((k, entry))
    if not todo:
        return {}
    try:
        if host_tag() != {key: man[key] for key in ("numba", "python", "triple")}:
            return {}
    except Exception:  # noqa: BLE001 - no numba, no shipped kernels
        return {}
    seeded: dict[str, int] = {}
    with zipfile.ZipFile(bundle) as z:
        for k, entry in todo:
            try:
                seeded[k] = _seed_one(k, entry, z)
            except Exception as e:  # noqa: BLE001 - only a head start
                sys.stderr.write(f"note: shipped kernel {k} not used: {type(e).__name__}: {e}\n")
    return seeded


def _seed_one(kernel: str, entry: dict[str, Any], z: zipfile.ZipFile) -> int:
    from thresher.pipeline.precompile import _namespace

    d = _dispatcher(kernel)
    cache = getattr(d, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:  # caching off for it (a NullCache)
        return 0
    if Path(cache_file._index_path).name != entry["index"] or cache_file._source_stamp.hex() != entry["stamp"]:
        return 0  # not the source (or line) it was compiled from
    codegen = d.targetctx.codegen()
    have = cache_file._load_index()
    ns = _namespace()
    n = 0
    for e in entry["entries"]:
        sig = eval(e["sig"], ns)  # noqa: S307 - numba type expressions written by write()
        key = cache._index_key(sig, codegen)
        if list(key[2]) != e["code"] or key in have:
            continue  # other bytecode (stale), or cached here already
        cache_file.save(key, pickle.loads(z.read(e["data"])))  # numba's own save: index + data file
        n += 1
    return n


def seed_recipe(recipe) -> dict[str, int]:
    """``seed`` the kernels a recipe's ops call (kernel_index, or an op's ``numba_kernels``)."""
    from thresher.pipeline.precompile import recipe_kernels

    try:
        kernels = [k for k, _ in recipe_kernels(spec.op_class() for spec in recipe.ops)]
    except Exception:  # noqa: BLE001 - only a head start
        return {}
    return seed(kernels)


# -------------------------------------------------------------------------------------- the bundle

def stale(bundle: Path = BUNDLE) -> list[str]:
    """Why the bundle is not what ``write`` would build from these sources and kernel_index (empty
    when current): a kernel missing or with other signatures, a source it depends on changed."""
    from thresher.pipeline.kernel_index import KERNELS

    man = manifest(bundle)
    if man is None:
        return [f"{bundle.name} is missing or unreadable"]
    why = []
    for k, (_, sigs) in KERNELS.items():
        if k in HOST_TUNED:
            continue
        entry = man["kernels"].get(k)
        if entry is None:
            why.append(f"{k}: not in the bundle")
            continue
        if sorted(e["sig"] for e in entry["entries"]) != sorted(sigs):
            why.append(f"{k}: other signatures than kernel_index")
        deps = fingerprint(k.partition(":")[0])
        changed = sorted(set(deps.items()) ^ set(entry["deps"].items()))
        if changed:
            why.append(f"{k}: sources changed: {sorted({p for p, _ in changed})}")
    why += [f"{k}: not in kernel_index" for k in man["kernels"] if k not in KERNELS]
    why += [f"{k}: shipped, but listed in HOST_TUNED" for k in man["kernels"] if k in HOST_TUNED]
    return why


def _build(out: Path) -> None:
    """In a process with ``NUMBA_CPU_NAME=generic`` and an empty ``NUMBA_CACHE_DIR``: compile every
    kernel in kernel_index and write numba's cache entries of each, with the manifest, to ``out``."""
    from numba.core import config

    from thresher.pipeline.kernel_index import KERNELS
    from thresher.pipeline.precompile import compile_kernel

    if config.CPU_NAME != "generic" or config.CPU_FEATURES != "":
        raise SystemExit("build with NUMBA_CPU_NAME=generic (run `python -m thresher.pipeline.shipped_kernels --write`)")
    man: dict[str, Any] = {**host_tag(), "cpu": "generic", "kernels": {}}
    files: dict[str, bytes] = {}
    for k, (_, sigs) in KERNELS.items():
        if k in HOST_TUNED:
            continue
        _, compiled, _ = compile_kernel(k, sigs)
        d = _dispatcher(k)
        cache_file = d._cache._cache_file
        overloads = cache_file._load_index()
        if compiled != len(sigs) or len(overloads) != len(sigs):
            raise SystemExit(f"{k}: compiled {compiled} of {len(sigs)} signatures ({len(overloads)} cached): "
                             "build in an empty NUMBA_CACHE_DIR")
        entries = []
        for i, (key, data_name) in enumerate(sorted(overloads.items(), key=lambda kv: str(kv[0][0]))):
            arc = f"{k.replace(':', '/')}/{i}.nbc"
            files[arc] = Path(cache_file._cache_path, data_name).read_bytes()
            entries.append({"sig": str(key[0]), "code": list(key[2]), "data": arc})
        src = Path(d.py_func.__code__.co_filename).resolve()
        man["kernels"][k] = {"file": src.relative_to(OPERATORS).as_posix(), "index": Path(cache_file._index_path).name,
                             "stamp": cache_file._source_stamp.hex(), "deps": fingerprint(k.partition(":")[0]),
                             "entries": entries}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in [("manifest.json", json.dumps(man, indent=1, sort_keys=True).encode()), *sorted(files.items())]:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    out.write_bytes(buf.getvalue())


def write(out: Path = BUNDLE) -> None:
    """Build the bundle in a child process (generic CPU, empty cache), then replace ``out``."""
    with tempfile.TemporaryDirectory(prefix="thresher-shipped-") as tmp:
        env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(Path(tmp, "numba")),
               "THRESHER_SHIPPED_KERNELS": "0"}
        env.pop("NUMBA_CPU_FEATURES", None)
        part = Path(tmp, "bundle.zip")
        subprocess.run([sys.executable, "-m", "thresher.pipeline.shipped_kernels", "--build", str(part)], env=env, check=True)
        out.write_bytes(part.read_bytes())


if __name__ == "__main__":  # python -m thresher.pipeline.shipped_kernels --write [PATH]
    if sys.argv[1:2] == ["--build"] and len(sys.argv) == 3:
        _build(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["--write"] and len(sys.argv) <= 3:
        write(Path(sys.argv[2]) if len(sys.argv) == 3 else BUNDLE)
    else:
        sys.exit("usage: python -m thresher.pipeline.shipped_kernels --write [PATH]")
