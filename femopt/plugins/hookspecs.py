"""The one module of femopt hook specifications.

Every component femopt knows (mesh generators, physics, objective/constraint functions,
filters, optimizers, solvers, exporters) is added through a *registrar* hook: the hook
receives the :class:`~femopt.plugins.registry.Registry` and calls ``registry.add(cls)``
for each component class it provides. femopt's built-ins use these same hooks.

Hooks are grouped by lifecycle: registration first (called once when the plugin manager
is built), then run-time notifications.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("femopt")


# -- registration -------------------------------------------------------------------


@hookspec
def femopt_register_meshes(registry: Any) -> None:
    """Add mesh sources (the ``mesh.type`` of a problem file), e.g. ``structured``."""


@hookspec
def femopt_register_physics(registry: Any) -> None:
    """Add physics (``physics.type``), e.g. ``linear_elasticity``, ``heat_conduction``."""


@hookspec
def femopt_register_functions(registry: Any) -> None:
    """Add objective/constraint functions (``objective.type``, ``constraints[].type``)."""


@hookspec
def femopt_register_filters(registry: Any) -> None:
    """Add design filters (``filters[].type``), e.g. ``density``, ``heaviside``."""


@hookspec
def femopt_register_optimizers(registry: Any) -> None:
    """Add optimizers (``optimizer.type``), e.g. ``oc``, ``mma``, ``nlopt``."""


@hookspec
def femopt_register_solvers(registry: Any) -> None:
    """Add linear solvers (``solver.type``), e.g. ``direct``, ``pcg``."""


@hookspec
def femopt_register_exporters(registry: Any) -> None:
    """Add result exporters (``output.formats``), e.g. ``vtu``."""


# -- run time -----------------------------------------------------------------------


@hookspec
def femopt_run_start(problem: Any, out_dir: Any) -> None:
    """Called once a problem is built and before the first iteration."""


@hookspec
def femopt_iteration(record: Any) -> None:
    """Called after each design iteration with its :class:`IterationRecord`."""


@hookspec
def femopt_run_end(summary: dict) -> None:
    """Called after the run with the summary that goes into ``summary.json``."""
