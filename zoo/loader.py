"""Plugin discovery: load each ``zoo`` entry point on its own and build the registry from its hooks."""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

import click
import pluggy

from zoo import hookspecs
from zoo.errors import PluginWarning, describe
from zoo.registry import Architecture, Dataset, Exporter, Plugin, Registrable, Registry, Runtime, Weights

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
"""Set to 1 (or true, yes, on) to load only zoo's built-in plugins; 0, false, no, off or empty leave them on."""
ONLY_PLUGINS_ENV = "ZOO_PLUGINS"
"""A comma-separated list of the third-party distributions (or entry-point names) to load; others stay off."""

_HOOKS = {"register_architectures": Architecture, "register_datasets": Dataset, "register_exporters": Exporter,
          "register_runtimes": Runtime, "register_weights": Weights, "register_commands": click.Command}  # fmt: skip


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


def _canonical(name: str) -> str:
    """A distribution or entry-point name as packaging compares them: `zoo_dl`, `Zoo.DL` and `zoo-dl` are one."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _autoload_disabled() -> bool:
    value = os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def _allowed() -> list[str] | None:
    """The third-party plugins ``$ZOO_PLUGINS`` lists, canonically spelt; None when it is not set."""
    only = os.environ.get(ONLY_PLUGINS_ENV)
    return None if only is None else [_canonical(n) for n in only.split(",") if n.strip()]


def _enabled(plugin: Plugin, allowed: list[str] | None) -> bool:
    if plugin.builtin:
        return True
    if _autoload_disabled():
        return False
    return allowed is None or _canonical(plugin.distribution) in allowed or _canonical(plugin.name) in allowed


def _warn_unmatched(plugins: list[Plugin], allowed: list[str]) -> None:
    """A name in ``$ZOO_PLUGINS`` that is no installed plugin (a typo, say), or an empty list, would silently leave
    plugins off."""
    if not allowed:
        warnings.warn(
            f"${ONLY_PLUGINS_ENV} is set but lists no plugin, so no third-party plugin loads; unset it to load them "
            f"all, or set {DISABLE_AUTOLOAD_ENV}=1 to say that you want none",
            PluginWarning,
            stacklevel=3,
        )
        return
    third = [p for p in plugins if not p.builtin]
    unknown = [n for n in allowed if not any(n in (_canonical(p.distribution), _canonical(p.name)) for p in third)]
    if unknown:
        installed = ", ".join(sorted({p.distribution for p in third})) or "none"
        warnings.warn(
            f"${ONLY_PLUGINS_ENV} names {', '.join(unknown)}, which no installed plugin is (installed: {installed}); "
            f"fix the list, or install the plugin",
            PluginWarning,
            stacklevel=3,
        )


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

    Built-ins load first, so they keep their names when a third party reuses one; third-party plugins
    follow in order of distribution name, then entry-point name, so the first of them keeps a contested name.
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
        ((_plugin_for(ep), ep) for ep in eps), key=lambda p: (not p[0].builtin, p[0].distribution.lower(), p[0].name)
    )
    allowed = _allowed()
    if allowed is not None and not _autoload_disabled():
        _warn_unmatched([p for p, _ in plugins], allowed)
    for plugin, ep in plugins:
        registry.plugins.append(plugin)
        if not _enabled(plugin, allowed):
            plugin.status = "disabled"
            continue
        try:
            module = ep.load()
            plugin.location = getattr(module, "__file__", None) or ""
            _register(pm, module, f"{plugin.distribution}:{plugin.name}")
        except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() (argparse) must not end every command
            _fail(plugin, "failed to load", exc)
            continue
        loaded.append((plugin, module))

    for plugin, module in loaded:
        staged: list[Registrable] = []
        try:
            for caller in pm.get_hookcallers(module) or []:
                kind = _HOOKS[caller.name]
                for impl in caller.get_hookimpls():
                    if impl.plugin is module:
                        impl.function(register=functools.partial(_stage, staged, kind, caller.name))
        except (Exception, SystemExit) as exc:
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


def _stage(staged: list[Registrable], kind: type, hook: str, item: object) -> None:
    if not isinstance(item, kind):
        package = kind.__module__.partition(".")[0]  # zoo.Architecture, click.Command
        raise TypeError(f"{hook} got {type(item).__name__}, expected {package}.{kind.__name__}")
    staged.append(item)  # type: ignore[arg-type]


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, loaded from installed plugins on first use."""
    return load_registry()
