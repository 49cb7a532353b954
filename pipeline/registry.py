"""The operator registry: recipes name ops only through it.

Built-in ops live in the ``operators`` package; plugins register through the
``thresher.operators`` entry point group (a module imported for its ``@register`` calls).
Nothing is imported from a path a recipe gives.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from pipeline.errors import RecipeError, did_you_mean
from pipeline.ops import Op

_REGISTRY: dict[str, type[Op]] = {}
_loaded = False


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op available to recipes under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls:
        raise TypeError(f"op name '{cls.name}' is taken by {other.__module__}.{other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _import_package(name: str) -> None:
    pkg = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=f"{name}."):
        importlib.import_module(info.name)


def load_all() -> None:
    """Import the built-in operators and any installed plugins (once)."""
    global _loaded
    if _loaded:
        return
    _import_package("operators")
    for ep in entry_points(group="thresher.operators"):
        if ep.value != "operators":
            _import_package(ep.value)
    _loaded = True


def get_op(name: str) -> type[Op]:
    load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"unknown op '{name}'.{did_you_mean(name, _REGISTRY)} "
                          "Run `thresher ops` for the list.") from None


def all_ops() -> dict[str, type[Op]]:
    load_all()
    return dict(sorted(_REGISTRY.items()))
