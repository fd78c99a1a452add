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

from femopt.assembly.sparse_vector import SparseVector
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
        geometry: None for the model's own mesh; in shape optimization the mesh at moved
            node coordinates (:class:`femopt.shape.geometry.Geometry`: ``points``, cell
            volumes, the load vectors' coordinate derivative), from which a function
            takes what it derives from the geometry.
    """

    rho: Any
    u: Any
    loads: Any
    weights: Any
    model: Any
    geometry: Any = None


class Function(Component):
    """An objective or constraint. Subclasses implement ``value`` and the partials.

    ``needs_state = False`` marks functions of rho alone (volume): OC's bisection and
    cheap constraint checks evaluate them without a solve.
    """

    needs_state: ClassVar[bool] = True
    label: ClassVar[str] = ""  # short column name for logs (default: name)
    positive_limit: ClassVar[bool] = False  # a constraint bound must be > 0 (stress)

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

    def partial_x(self, state: State) -> Any | None:
        """Explicit dJ/dX with respect to the node coordinates at fixed u and rho,
        (n_nodes, dim), at ``state.geometry`` (shape optimization); None when zero.

        A function that keeps something derived from the geometry (cell volumes, strain
        matrices) must read it from ``state.geometry`` when that is set and give its
        derivative here; otherwise its value and shape gradient stay those of the
        initial mesh (``femopt check-gradients`` on a shape problem shows it).
        """
        return None

    def adjoint_state(self, state: State) -> Any | None:
        """The adjoint lambda (n_cases, n_dofs) when known without a solve (self-adjoint
        functions), else None."""
        return None

    def linear_form(self) -> Any | None:
        """The function as a :class:`~femopt.objectives.linear_form.LinearForm` when it is
        linear in the states and densities (the device paths then evaluate it in closed
        form), else None."""
        return None

    def rho_only_value(self, rho: Any) -> float:
        """Value from densities alone (only for ``needs_state = False``)."""
        raise NotImplementedError

    def eigen_problem(self) -> Any | None:
        """The eigenproblem K phi = lambda M phi the function reads
        (:class:`femopt.objectives.eigenfrequency.EigenProblem`), or None. A function that
        gives one is a function of the lowest eigenvalues: the paths solve the
        eigenproblem, take its value from ``eigen_value(lambdas)`` and build its gradient
        from the eigenvectors with ``eigen_weights(lambdas)`` = dJ/dlambda_i, instead of
        ``value``, the partials and an adjoint solve."""
        return None


def cell_volumes(mesh) -> np.ndarray:
    """(n_cells,) cell volumes (areas in 2D); on a structured grid a read-only view of the
    one cell volume (no array of the grid's size)."""
    if mesh.grid is not None:
        return np.broadcast_to(np.float64(np.prod(mesh.grid.spacing)), (mesh.n_cells,))
    from femopt.assembly.elements import cell_measures, get_element

    return cell_measures(get_element(mesh.cell_type), mesh.points[mesh.cells])


def case_weights(model, case: str | None) -> np.ndarray:
    """Load-case weights of a function: all cases with their weights, or one by name.

    Raises:
        ValueError naming the known cases when ``case`` is not one of them.
    """
    if case is None:
        return np.asarray(model.weights, dtype=float)
    if case not in model.case_names:
        raise ValueError(f"case: unknown load case {case!r} (cases: "
                         f"{', '.join(model.case_names)})")
    w = np.zeros(len(model.case_names))
    w[model.case_names.index(case)] = 1.0
    return w


def nodal_functional(model, region, components: np.ndarray, what: str) -> SparseVector:
    """The full-dof vector a with a . u = the mean over the region's nodes of components
    . u_i, by its nonzeros (no vector of the problem's size; every node alike when
    ``region`` is None and there is one component).

    Raises:
        ValueError when the region selects no node, or when every dof it weights is
        supported (the value would not depend on the design).
    """
    from femopt.mesh.regions import RegionError, select_nodes

    k = model.physics.dofs_per_node
    comps = [c for c in range(k) if components[c] != 0.0]
    if region is None and comps == [0] and k == 1:
        n = model.mesh.n_nodes
        a = SparseVector(np.zeros(0, np.int64), np.zeros(0), model.n_dofs,
                         components[0] / n)
        weighted = model.n_dofs
    else:
        try:
            nodes = (select_nodes(region, model.mesh) if region is not None
                     else np.arange(model.mesh.n_nodes))
        except RegionError as exc:
            raise ValueError(f"region: {exc}") from None
        index = (np.asarray(nodes, np.int64)[:, None] * k + np.array(comps, np.int64)
                 ).ravel()
        values = np.broadcast_to(np.asarray([components[c] / nodes.size for c in comps]),
                                 (nodes.size, len(comps))).ravel()
        order = np.argsort(index)
        a = SparseVector(index[order], values[order], model.n_dofs)
        weighted = index.size
    if np.unique(model.fixed).size >= weighted and np.all(np.isin(a.nonzero(),
                                                                  model.fixed)):
        raise ValueError(f"every {what} dof the region selects is supported: the value is "
                         "fixed and does not depend on the design")
    return a
