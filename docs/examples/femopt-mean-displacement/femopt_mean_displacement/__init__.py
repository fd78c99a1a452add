"""An example femopt plugin: the objective ``mean_displacement``.

The mean, over the n nodes of a region, of the displacement along a direction d:

    J(u) = sum_c w_c (1/n) sum_{i in region} d . u_{c,i}

summed over the load cases c with their weights w_c, or for the one case that ``case``
names (w = 1). J is linear in u and has no explicit dependence on the densities, so the
plugin gives ``value`` and ``partial_u`` (dJ/du, the same vector g for every case, scaled
by w_c) and nothing else: femopt's adjoint solves K^T lambda_c = -w_c g with the forward
solver's factorization and turns lambda into dJ/drho. No ``adjoint_state``: unlike
compliance, J is not self-adjoint unless the load is w_c g itself.
"""

from __future__ import annotations

import numpy as np

from femopt.mesh.regions import Region, RegionError, select_nodes
from femopt.objectives import Function, State
from femopt.plugins import hookimpl
from femopt.plugins.registry import Options

__version__ = "0.1.0"


class MeanDisplacementOptions(Options):
    region: Region
    """Nodes whose displacement is averaged (a region selector, as for supports)."""
    direction: list[float]
    """Direction d, one component per nodal degree of freedom (e.g. [0, -1] in 2D)."""
    case: str | None = None
    """Name of the load case to measure; all cases, summed with their weights, if omitted."""


class MeanDisplacement(Function):
    """J = sum_c w_c (1/n) sum_{i in region} d . u_{c,i}."""

    name = "mean_displacement"
    summary = "Mean over a region's nodes of the displacement along a direction"
    Options = MeanDisplacementOptions

    def __init__(self, options: MeanDisplacementOptions, model):
        super().__init__(options, model)
        physics = model.physics
        k = physics.dofs_per_node
        d = np.asarray(options.direction, dtype=float)
        if d.size != k:
            raise ValueError(
                f"direction has {d.size} component(s); {physics.name} has {k} per node "
                f"({', '.join(physics.dof_names)})")
        if not np.any(d):
            raise ValueError("direction must not be the zero vector")
        try:
            self.nodes = select_nodes(options.region, model.mesh)
        except RegionError as exc:
            raise ValueError(f"region: {exc}") from None
        # dJ/du_c = w_c g with g = d / n on the region's dofs (node-major numbering)
        self.g = np.zeros(model.n_dofs)
        for comp in range(k):
            self.g[self.nodes * k + comp] = d[comp] / self.nodes.size
        if options.case is None:
            self.case_weights = np.asarray(model.weights, dtype=float)
        else:
            if options.case not in model.case_names:
                raise ValueError(f"case: no load case named {options.case!r} "
                                 f"(cases: {', '.join(model.case_names)})")
            self.case_weights = np.zeros(len(model.case_names))
            self.case_weights[model.case_names.index(options.case)] = 1.0

    def value(self, state: State) -> float:
        return float(self.case_weights @ (state.u @ self.g))

    def partial_u(self, state: State):
        return self.case_weights[:, None] * self.g[None, :]


@hookimpl
def femopt_register_functions(registry) -> None:
    registry.add("function", MeanDisplacement)
