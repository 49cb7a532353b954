"""The operator registry: recipes name ops only through it.

Built-in ops live in the ``operators`` package. Plugins come from installed distributions through
the ``thresher.operators`` entry point group, in either form: ``pkg`` (the package and all its
submodules are imported for their ``@register`` calls) or ``pkg.mod:Class`` (the module is
imported and the class registered if it is not yet). ``THRESHER_PLUGINS`` (comma-separated, same
two forms) adds modules without installed metadata: ``thresher submit`` ships plugin code to a
cluster as plain files and names it there. A plugin that fails to load is reported in one line
naming it and its distribution; every other op still works. Nothing is imported from a path a
recipe gives.

Looking an op up (``get_op``, ``resolve_alias``, ``op_names``: what validating a recipe does)
imports only that op's module, found in ``op_index`` (the built-ins by name, generated from this
registry), and the plugins; ``all_ops`` imports every built-in module (``thresher ops``, the docs).
A process that validates the quickstart recipe so imports 4 op modules instead of ~70, and no numba,
scipy or pandas (docs/benchmarks.md, "Cold start").
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import sys
import types
from dataclasses import dataclass
from importlib.metadata import distribution, entry_points, packages_distributions

from thresher.pipeline.errors import RecipeError, did_you_mean
from thresher.pipeline.op_index import BUILTIN, BUILTIN_ALIASES
from thresher.pipeline.ops import Op

GROUP = "thresher.operators"  # the entry point group plugins declare
PLUGINS_ENV = "THRESHER_PLUGINS"  # more plugin modules, for code that travels without its metadata

_REGISTRY: dict[str, type[Op]] = {}
_ALIASES: dict[str, str] = {}  # a former op name -> its name now (recipes that use it still run)
_loaded = False  # every built-in module imported
_plugins_loaded = False
_SEEN: set[tuple[str, str, str | None]] = set()  # plugins tried: (entry point, value, distribution)
_FAILURES: list[PluginFailure] = []
_PKG_DIST: dict[str, tuple[str, str]] = {}  # module an entry point names -> (distribution, version)
_ENV_PKGS: set[str] = set()  # top-level packages named by THRESHER_PLUGINS


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op available to recipes under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls:
        raise TypeError(f"op name '{cls.name}' is taken by {other.__module__}.{other.__qualname__}")
    builtin = BUILTIN.get(cls.name)  # a built-in whose module is not imported (yet)
    if other is None and builtin is not None and builtin != f"{cls.__module__}:{cls.__qualname__}":
        raise TypeError(f"op name '{cls.name}' is taken by {builtin.replace(':', '.')}")
    _REGISTRY[cls.name] = cls
    for old in cls.aliases:
        _ALIASES[old] = cls.name
    return cls


def resolve_alias(name: str) -> tuple[str, str | None]:
    """(the op's current name, a deprecation note if ``name`` is a former one). When ``name`` is
    unknown and a plugin failed to load, raises an error naming that plugin's failure: the op is
    most likely its, and "unknown op" alone would send the user looking in the wrong place."""
    _ensure_plugins()
    if _FAILURES and not _known(name):
        raise _unknown(name)
    new = _ALIASES.get(name) or BUILTIN_ALIASES.get(name)
    if new is None or name in _REGISTRY or name in BUILTIN:
        return name, None
    return new, f"op '{name}' is now called '{new}'; the old name still works but is deprecated"


def _import_package(name: str) -> None:
    pkg = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=f"{name}."):
        importlib.import_module(info.name)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded: which one, declared by whom, and why."""

    entry_point: str  # the entry point's name (or the THRESHER_PLUGINS item)
    value: str  # what it names: "pkg" or "pkg.mod:Class"
    distribution: str | None  # the installed distribution that declares it; None: from THRESHER_PLUGINS
    error: str  # "ModuleNotFoundError: No module named 'x'"

    def message(self) -> str:
        src = f"from distribution {self.distribution}" if self.distribution else f"from {PLUGINS_ENV}"
        return f"plugin '{self.entry_point}' ({src}) could not be loaded: {self.error}"


def _load_plugin(value: str) -> None:
    """Import what one entry point names: ``pkg`` (the package and its submodules) or
    ``pkg.mod:Class`` (the module; the class is registered if its module did not do it)."""
    module, _, attr = (x.strip() for x in value.partition(":"))
    if not attr:
        _import_package(module)
        return
    obj = functools.reduce(getattr, attr.split("."), importlib.import_module(module))
    if isinstance(obj, type) and issubclass(obj, Op):
        if _REGISTRY.get(obj.name) is not obj:
            register(obj)
    elif isinstance(obj, types.ModuleType):
        _import_package(obj.__name__)
    else:
        raise TypeError(f"'{value}' is a {type(obj).__name__}, not an op class (a subclass of Filter, Mapper or GlobalOp)")


def _try_plugin(name: str, value: str, dist: str | None, failed: list[PluginFailure]) -> None:
    if (name, value, dist) in _SEEN:
        return
    _SEEN.add((name, value, dist))
    try:
        _load_plugin(value)
    except Exception as e:  # noqa: BLE001 - a broken plugin must not take the other ops down with it
        text = (str(e).strip().splitlines() or [""])[0][:300]
        failure = PluginFailure(name, value, dist, f"{type(e).__name__}: {text}" if text else type(e).__name__)
        _FAILURES.append(failure)
        failed.append(failure)


def load_plugins() -> list[PluginFailure]:
    """Load the plugins not loaded yet (installed entry points, then ``THRESHER_PLUGINS``): a
    notebook can call it after installing one. Each failure is reported on stderr in one line and
    returned; the ops that did load stay usable."""
    failed: list[PluginFailure] = []
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        if ep.value.strip() == "thresher.operators" or (dist_name or "").lower() == "thresher":
            continue  # thresher's own entry point: the built-ins, imported first
        if dist is not None:
            _PKG_DIST.setdefault(ep.module, (dist_name, dist.version))
        _try_plugin(ep.name, ep.value, dist_name or "unknown", failed)
    for item in os.environ.get(PLUGINS_ENV, "").split(","):
        if item.strip():
            _ENV_PKGS.add(item.strip().split(":")[0].split(".")[0])
            _try_plugin(item.strip(), item.strip(), None, failed)
    for f in failed:
        sys.stderr.write(f"warning: {f.message()}\n")
    return failed


def plugin_failures() -> list[PluginFailure]:
    """The plugins that could not be loaded in this process."""
    load_all()
    return list(_FAILURES)


def load_all() -> None:
    """Import the built-in operators and any installed plugins (once)."""
    global _loaded
    if _loaded:
        return
    _import_package("thresher.operators")
    _loaded = True
    _ensure_plugins()


def _ensure_plugins() -> None:
    """Load the installed plugins once (cheap where there are none: reading the entry points)."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True  # before loading: a plugin that looks an op up while it is imported sees the rest
        load_plugins()


def _known(name: str) -> bool:
    return name in _REGISTRY or name in BUILTIN or name in _ALIASES or name in BUILTIN_ALIASES


def op_names() -> list[str]:
    """Every op name (built-ins and plugins), without importing the built-in modules."""
    _ensure_plugins()
    return sorted(set(BUILTIN) | set(_REGISTRY))


def _unknown(name: str) -> RecipeError:
    msg = f"unknown op '{name}'.{did_you_mean(name, set(BUILTIN) | set(_REGISTRY))}"
    if _FAILURES:
        named = [f for f in _FAILURES if f.entry_point == name] or _FAILURES
        msg += " It may be defined by a plugin that failed: " + "; ".join(f.message() for f in named) + "."
    return RecipeError(msg + " Run `thresher ops` for the list.")


def get_op(name: str) -> type[Op]:
    """The op class registered as ``name``: a built-in's module is imported (only it), a plugin's
    was imported with the plugins."""
    _ensure_plugins()
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name].partition(":")[0])
        if name not in _REGISTRY:  # op_index is out of date: the whole package, as before it existed
            load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None


def all_ops() -> dict[str, type[Op]]:
    load_all()
    return dict(sorted(_REGISTRY.items()))


def is_builtin(cls: type[Op]) -> bool:
    """An op shipped with thresher (its module is under the ``thresher`` package)."""
    return cls.__module__ == "thresher" or cls.__module__.startswith("thresher.")


def builtin_ops() -> dict[str, type[Op]]:
    """The ops shipped with thresher: what docs/operators.md documents, whatever else is installed."""
    return {n: c for n, c in all_ops().items() if is_builtin(c)}


@dataclass(frozen=True)
class Origin:
    """Where an op is defined: its module and the installed distribution that ships it."""

    module: str
    distribution: str | None = None
    version: str | None = None
    via: str | None = None  # how it was found without a distribution (THRESHER_PLUGINS)

    @property
    def builtin(self) -> bool:
        return self.module == "thresher" or self.module.startswith("thresher.")

    def __str__(self) -> str:
        if self.builtin:
            return "thresher (built-in)"
        if self.distribution:
            return f"{self.distribution} {self.version} (module {self.module})"
        return f"module {self.module} ({f'from {self.via}' if self.via else 'not from an installed distribution'})"


def op_origin(cls: type[Op]) -> Origin:
    """Which distribution defines ``cls`` (``thresher ops NAME`` shows it; ``submit`` ships it)."""
    module = cls.__module__
    if is_builtin(cls):
        from thresher import __version__

        return Origin(module, "thresher", __version__)
    top = module.split(".")[0]
    # the entry point whose module is the op's or contains it (the longest: namespace packages)
    names = [m for m in _PKG_DIST if module == m or module.startswith(m + ".")]
    found = _PKG_DIST[max(names, key=len)] if names else None
    if found is None:
        for name in packages_distributions().get(top, []):
            try:
                found = (name, distribution(name).version)
                break
            except Exception:  # noqa: BLE001 - metadata that cannot be read: try the next name
                continue
    if found is not None:
        return Origin(module, found[0], found[1])
    return Origin(module, via=PLUGINS_ENV if top in _ENV_PKGS else None)


def index_source() -> str:
    """The text of ``op_index.py`` for the built-ins registered now (every module imported)."""
    load_all()
    ops = {n: f"{c.__module__}:{c.__qualname__}" for n, c in sorted(_REGISTRY.items()) if is_builtin(c)}
    aliases = {a: n for a, n in sorted(_ALIASES.items()) if n in ops}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_index.py")
    with open(path, encoding="utf-8") as f:
        head = f.read().split("# op name ->")[0]
    body = "".join(f"    {json.dumps(n)}: {json.dumps(v)},\n" for n, v in ops.items())
    alias_body = "".join(f"    {json.dumps(a)}: {json.dumps(n)},\n" for a, n in aliases.items())
    return (f"{head}# op name -> \"module:class\"\nBUILTIN = {{\n{body}}}\n\n"
            f"# a former op name -> its name now\nBUILTIN_ALIASES = {{\n{alias_body}}}\n")


if __name__ == "__main__":  # python -m thresher.pipeline.registry --write-index
    if sys.argv[1:] != ["--write-index"]:
        sys.exit("usage: python -m thresher.pipeline.registry --write-index")
    # the module the ops register in, not this __main__ copy of it
    from thresher.pipeline.registry import index_source as real

    text = real()
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_index.py"), "w", encoding="utf-8") as f:
        f.write(text)
