"""zoo: a pluggable model zoo for small image classifiers in PyTorch."""

from __future__ import annotations

import os as _os
import sys as _sys

# OpenMP threads that spin while they wait collapse training when other jobs share the cores (6% of idle
# throughput beside two busy processes, against 50% when waiting threads sleep: tests/benchmarks/under_load.py).
# torch reads it when it loads, so the library and the command both set it here, before zoo imports torch, unless
# the user chose (OMP_WAIT_POLICY=ACTIVE restores spinning) or torch was imported first (then it cannot change).
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from zoo.card import ModelCard, Provider
from zoo.errors import AmbiguousName, DatasetNotFound, PluginWarning, SettingError, UnknownName, ZooError
from zoo.hookspecs import hookimpl
from zoo.loader import get_registry, load_registry
from zoo.references import ModelRef, resolve
from zoo.registry import Architecture, Dataset, Exporter, Plugin, Recipe, Registry, Runtime, Weights
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
    "Runtime",
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
