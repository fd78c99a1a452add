"""The interface of objective and constraint functions J(u, rho).

A function gives its value and its partial derivatives; the adjoint module
(:mod:`femopt.adjoint`) turns them into the total derivative dJ/drho with one adjoint
solve per function, reusing the forward solver. A self-adjoint function (compliance)
may instead return its adjoint state directly from :meth:`Function.adjoint_state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from femopt.plugins.registry import Component


@dataclass
class State:
    """What the forward analysis produced at one design.

    Attributes:
        rho: (n_cells,) physical densities (after filters and passive regions).
        u: (n_cases, n_dofs) states, one per load case (zeros on supported dofs).
        loads: (n_cases, n_dofs) load vectors.
        weights: (n_cases,) load case weights.
        model: the built model (mesh, physics, interpolation, element matrices, ...).
    """

    rho: Any
    u: Any
    loads: Any
    weights: Any
    model: Any


class Function(Component):
    """An objective or constraint. Subclasses implement ``value`` and the partials.

    ``needs_state = False`` marks functions of rho alone (volume): OC's bisection and
    cheap constraint checks evaluate them without a solve.
    """

    needs_state: ClassVar[bool] = True
    label: ClassVar[str] = ""  # short column name for logs (default: name)

    def __init__(self, options, model):
        self.options = options
        self.model = model

    def value(self, state: State) -> float:
        raise NotImplementedError

    def partial_rho(self, state: State) -> Any | None:
        """Explicit dJ/drho at fixed u, (n_cells,), or None when zero."""
        return None

    def partial_u(self, state: State) -> Any | None:
        """dJ/du at fixed rho, (n_cases, n_dofs), or None when zero."""
        return None

    def adjoint_state(self, state: State) -> Any | None:
        """The adjoint lambda (n_cases, n_dofs) when known without a solve (self-adjoint
        functions), else None."""
        return None

    def rho_only_value(self, rho: Any) -> float:
        """Value from densities alone (only for ``needs_state = False``)."""
        raise NotImplementedError


def cell_volumes(mesh) -> np.ndarray:
    if mesh.grid is not None:
        return np.full(mesh.n_cells, float(np.prod(mesh.grid.spacing)))
    from femopt.assembly.elements import get_element, physical_gradients

    _, wdet = physical_gradients(get_element(mesh.cell_type), mesh.points[mesh.cells])
    return wdet.sum(axis=1)
