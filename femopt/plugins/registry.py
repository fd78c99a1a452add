"""The registry of named components that plugins fill through registrar hooks."""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from femopt.errors import FemoptError, PluginError

KINDS = ("mesh", "physics", "function", "filter", "optimizer", "solver", "exporter")


class Options(BaseModel):
    """Base of every component's option schema: unknown keys and non-finite numbers are
    errors, and types are strict (no number read from a string or a boolean)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, frozen=True,
        strict=True,
    )


class Component:
    """Base class of a named, pluggable component.

    Subclasses set ``name`` (the YAML ``type:`` value), ``Options`` (a pydantic model of the
    section's other keys) and a one-line ``summary``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options


@dataclass
class Entry:
    kind: str
    name: str
    cls: type
    plugin: str  # name of the plugin (module) that registered it


@dataclass
class Registry:
    """Named components by kind. Filled by registrar hooks, read by the problem builder."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    current_plugin: str = "<unknown>"

    def add(self, kind: str, cls: type) -> None:
        """Register component class ``cls`` of ``kind`` under ``cls.name``."""
        if kind not in KINDS:
            raise PluginError(
                f"plugin '{self.current_plugin}' registered a component of unknown kind "
                f"{kind!r}; kinds are: {', '.join(KINDS)}"
            )
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{self.current_plugin}' registered a {kind} without a name")
        options = getattr(cls, "Options", None)
        if not (isinstance(options, type) and issubclass(options, BaseModel)):
            raise PluginError(
                f"plugin '{self.current_plugin}': {kind} '{name}' has no pydantic Options schema"
            )
        if name in self.entries[kind]:
            other = self.entries[kind][name].plugin
            raise PluginError(
                f"{kind} '{name}' is registered twice: by plugin '{other}' and by "
                f"plugin '{self.current_plugin}'"
            )
        self.entries[kind][name] = Entry(kind, name, cls, self.current_plugin)

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            raise KeyError(self.unknown_message(kind, name)) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def unknown_message(self, kind: str, name: str) -> str:
        known = self.names(kind)
        msg = f"unknown {kind} type {name!r}"
        close = difflib.get_close_matches(str(name), known, n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        return msg + f" (known: {', '.join(known) or 'none'})"

    def create(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Instantiate a component; an exception inside the plugin names the plugin."""
        entry = self.get(kind, name)
        try:
            return entry.cls(*args, **kwargs)
        except ValueError:
            raise  # bad options: the caller locates it in the problem file
        except Exception as exc:
            if isinstance(exc, (PluginError,)) or type(exc).__module__.startswith("femopt"):
                raise
            raise PluginError(
                f"{kind} '{name}' from plugin '{entry.plugin}' raised while being set up: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    @contextmanager
    def guard(self, kind: str, name: str, what: str):
        """Turn an unexpected exception inside a component into a PluginError that names
        the component and the plugin it comes from."""
        try:
            yield
        except (FemoptError, MemoryError):  # memory running out is not the plugin's fault
            raise
        except Exception as exc:
            plugin = self.entries.get(kind, {}).get(name)
            origin = f" from plugin '{plugin.plugin}'" if plugin else ""
            raise PluginError(f"{kind} '{name}'{origin} raised in {what}: "
                              f"{type(exc).__name__}: {exc}") from exc
