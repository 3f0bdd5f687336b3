"""Plugin discovery: load each ``zoo`` entry point on its own and build the registry from its hooks."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

import pluggy

from zoo import hookspecs
from zoo.errors import PluginWarning, describe
from zoo.registry import Architecture, Dataset, Exporter, Item, Plugin, Registry, Weights

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "ONLY_PLUGINS_ENV",
    "get_registry",
    "load_registry",
]

ENTRY_POINT_GROUP = "zoo"
BUILTIN_DISTRIBUTION = "zoo-classifiers"
DISABLE_AUTOLOAD_ENV = "ZOO_DISABLE_PLUGIN_AUTOLOAD"
"""Set to any non-empty value to load only zoo's built-in plugins."""
ONLY_PLUGINS_ENV = "ZOO_PLUGINS"
"""A comma-separated list of the third-party distributions (or entry-point names) to load; others stay off."""

_HOOKS = {"register_architectures": Architecture, "register_datasets": Dataset, "register_exporters": Exporter,
          "register_weights": Weights}  # fmt: skip


def _plugin_for(ep: EntryPoint) -> Plugin:
    dist = ep.dist
    name = dist.metadata["Name"] if dist else "unknown"
    return Plugin(
        name=ep.name,
        distribution=name,
        version=dist.version if dist else "?",
        module=ep.value,
        builtin=name.lower().replace("_", "-") == BUILTIN_DISTRIBUTION,
    )


def _enabled(plugin: Plugin) -> bool:
    if plugin.builtin:
        return True
    if os.environ.get(DISABLE_AUTOLOAD_ENV):
        return False
    only = os.environ.get(ONLY_PLUGINS_ENV)
    if only is None:
        return True
    allowed = {n.strip().lower() for n in only.split(",") if n.strip()}
    return plugin.distribution.lower() in allowed or plugin.name.lower() in allowed


def _fail(plugin: Plugin, stage: str, exc: BaseException) -> None:
    plugin.status = "failed"
    plugin.error = f"{stage}: {describe(exc)}"
    warnings.warn(
        f"plugin {plugin.name!r} from {plugin.label} {plugin.error}; zoo carries on without it "
        f"(fix or uninstall it; `zoo plugins` lists plugins)",
        PluginWarning,
        stacklevel=4,
    )


def load_registry(eps: Iterable[EntryPoint] | None = None) -> Registry:
    """Load every entry point in the ``zoo`` group and collect what their hooks register.

    Built-ins load first, so they keep their names when a third party reuses one.
    Each plugin loads and registers inside its own error boundary: a plugin that
    fails to import, has a misspelt hook, or raises in a hook is marked failed
    and contributes nothing, and everything else still works.
    """
    if eps is None:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    loaded: list[tuple[Plugin, ModuleType]] = []

    plugins = sorted(
        ((_plugin_for(ep), ep) for ep in eps), key=lambda p: (not p[0].builtin, p[0].distribution, p[0].name)
    )
    for plugin, ep in plugins:
        registry.plugins.append(plugin)
        if not _enabled(plugin):
            plugin.status = "disabled"
            continue
        try:
            module = ep.load()
            plugin.location = getattr(module, "__file__", None) or ""
            _register(pm, module, f"{plugin.distribution}:{plugin.name}")
        except Exception as exc:
            _fail(plugin, "failed to load", exc)
            continue
        loaded.append((plugin, module))

    for plugin, module in loaded:
        staged: list[Item] = []
        try:
            for caller in pm.get_hookcallers(module) or []:
                kind = _HOOKS[caller.name]
                for impl in caller.get_hookimpls():
                    if impl.plugin is module:
                        impl.function(register=functools.partial(_stage, staged, kind, caller.name))
        except Exception as exc:
            _fail(plugin, "raised while registering", exc)
            continue
        for item in staged:
            registry.add(item, plugin)
    # Checked once every plugin is in: weights may be for an architecture that another plugin provides.
    for weights in list(registry.weights.values()):
        if weights.architecture not in registry.architectures:
            registry.remove(
                weights,
                f"are ignored: no plugin registers the architecture {weights.architecture!r}",
                "fix the architecture's name in the plugin, or install the plugin that provides it",
            )
    return registry


def _register(pm: pluggy.PluginManager, module: ModuleType, name: str) -> None:
    """Register ``module``, rejecting hooks no spec knows (a misspelt name), as pluggy's ``check_pending`` would."""
    pm.register(module, name=name)
    unknown = sorted(c.name for c in pm.get_hookcallers(module) or [] if c.spec is None)
    if unknown:
        pm.unregister(module)
        raise pluggy.PluginValidationError(
            module, f"unknown hook {', '.join(unknown)}; zoo's hooks are {', '.join(sorted(_HOOKS))}"
        )


def _stage(staged: list[Item], kind: type, hook: str, item: object) -> None:
    if not isinstance(item, kind):
        raise TypeError(f"{hook} got {type(item).__name__}, expected zoo.{kind.__name__}")
    staged.append(item)  # type: ignore[arg-type]


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, loaded from installed plugins on first use."""
    return load_registry()
