"""zoo: a pluggable model zoo for small image classifiers in PyTorch."""

from __future__ import annotations

from zoo.card import ModelCard, Provider
from zoo.errors import AmbiguousName, DatasetNotFound, PluginWarning, SettingError, UnknownName, ZooError
from zoo.hookspecs import hookimpl
from zoo.loader import get_registry, load_registry
from zoo.references import ModelRef, resolve
from zoo.registry import Architecture, Dataset, Exporter, Plugin, Recipe, Registry, Weights
from zoo.version import __version__

# No submodule is named like a function here, so these names are always the functions.
_LAZY = {
    "train": "zoo.training",
    "evaluate": "zoo.evaluation",
    "load": "zoo.runtimes",
    "predict": "zoo.prediction",
    "export": "zoo.exporting",
    "bench": "zoo.benchmarking",
}


def __getattr__(name: str) -> object:
    """``zoo.train``, ``zoo.evaluate``, ``zoo.load``, ``zoo.predict``, ``zoo.export`` and ``zoo.bench`` import torch:
    they load on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


__all__ = [
    "AmbiguousName",
    "Architecture",
    "Dataset",
    "DatasetNotFound",
    "Exporter",
    "ModelCard",
    "ModelRef",
    "Plugin",
    "PluginWarning",
    "Provider",
    "Recipe",
    "Registry",
    "SettingError",
    "UnknownName",
    "Weights",
    "ZooError",
    "__version__",
    "bench",
    "evaluate",
    "export",
    "get_registry",
    "hookimpl",
    "load",
    "load_registry",
    "predict",
    "resolve",
    "train",
]
