"""Plugin machinery: hook specifications, the component registry and the manager."""

from femopt.plugins.manager import get_manager, get_registry, hookimpl
from femopt.plugins.registry import Component, Registry

__all__ = ["Component", "Registry", "get_manager", "get_registry", "hookimpl"]
