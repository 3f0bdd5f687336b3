"""zoo: a pluggable model zoo for small image classifiers in PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"

from zoo.errors import AmbiguousName, DatasetNotFound, PluginWarning, UnknownName, ZooError
from zoo.hookspecs import hookimpl
from zoo.loader import get_registry, load_registry
from zoo.registry import Architecture, Dataset, Plugin, Recipe, Registry

__all__ = [
    "AmbiguousName",
    "Architecture",
    "Dataset",
    "DatasetNotFound",
    "Plugin",
    "PluginWarning",
    "Recipe",
    "Registry",
    "UnknownName",
    "ZooError",
    "__version__",
    "get_registry",
    "hookimpl",
    "load_registry",
]
