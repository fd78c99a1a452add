"""Builds the pluggy plugin manager and the component registry.

Plugins are found through the entry-point group ``femopt``; femopt's own built-ins are
declared there too. When femopt runs from a source tree that was never installed (no
entry points), the built-in modules listed in :mod:`femopt.plugins.builtin` are
registered instead, through the same hooks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from femopt.errors import PluginError
from femopt.plugins import hookspecs
from femopt.plugins.registry import Registry

hookimpl = pluggy.HookimplMarker("femopt")

ENTRY_POINT_GROUP = "femopt"

REGISTRARS = {
    "mesh": "femopt_register_meshes",
    "physics": "femopt_register_physics",
    "function": "femopt_register_functions",
    "filter": "femopt_register_filters",
    "optimizer": "femopt_register_optimizers",
    "solver": "femopt_register_solvers",
    "exporter": "femopt_register_exporters",
}


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str


_manager: pluggy.PluginManager | None = None
_registry: Registry | None = None
_infos: dict[str, PluginInfo] = {}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        version = ep.dist.version if ep.dist is not None else ""
        if pm.get_plugin(ep.name) is not None:
            # the same entry point seen twice (e.g. an editable install and a wheel)
            continue
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin '{ep.name}' (entry point '{ep.value}' of distribution '{dist}') "
                f"failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, module, ep.name, dist, version, ep.value)


def _register(pm, module, name, dist, version, where) -> None:
    try:
        pm.register(module, name=name)
    except Exception as exc:
        raise PluginError(
            f"plugin '{name}' of distribution '{dist}' could not be registered: {exc}"
        ) from exc
    _infos[name] = PluginInfo(name, dist, version, where)


def _load_builtins_from_source(pm: pluggy.PluginManager) -> None:
    from femopt import __version__
    from femopt.plugins.builtin import BUILTIN_PLUGINS

    for name, module_name in BUILTIN_PLUGINS.items():
        if pm.get_plugin(name) is None:
            _register(pm, importlib.import_module(module_name), name, "femopt",
                      __version__, module_name)


def build_manager(extra_plugins: dict[str, Any] | None = None) -> tuple[pluggy.PluginManager, Registry]:
    """A fresh plugin manager and registry (entry points + ``extra_plugins``)."""
    _infos.clear()
    pm = pluggy.PluginManager("femopt")
    pm.add_hookspecs(hookspecs)
    _load_entry_points(pm)
    if not any(info.distribution == "femopt" for info in _infos.values()):
        _load_builtins_from_source(pm)
    for name, module in (extra_plugins or {}).items():
        _register(pm, module, name, "<in-process>", "", getattr(module, "__name__", name))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if getattr(exc, "plugin", None) is not None else "?"
        raise PluginError(f"plugin '{name}' implements an unknown hook: {exc}") from exc
    registry = Registry()
    for hook_name in REGISTRARS.values():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            registry.current_plugin = impl.plugin_name
            try:
                impl.function(registry=registry)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin '{impl.plugin_name}' raised in {hook_name}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
    registry.current_plugin = "<unknown>"
    return pm, registry


def get_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _manager, _registry
    if _manager is None:
        _manager, _registry = build_manager()
    return _manager


def get_registry() -> Registry:
    """The process-wide component registry, built on first use."""
    get_manager()
    assert _registry is not None
    return _registry


def plugin_infos() -> list[PluginInfo]:
    get_manager()
    return sorted(_infos.values(), key=lambda i: (i.distribution != "femopt", i.name))


def reset() -> None:
    """Forget the process-wide manager (tests that install plugins use this)."""
    global _manager, _registry
    _manager = _registry = None
