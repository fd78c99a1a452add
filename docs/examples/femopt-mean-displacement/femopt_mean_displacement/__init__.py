"""An example femopt plugin: the objective ``mean_displacement``.

The mean, over the n nodes of a region, of the displacement along a direction d:

    J(u) = sum_c w_c (1/n) sum_{i in region} d . u_{c,i}

summed over the load cases c with their weights w_c, or for the one case that ``case``
names (w = 1). The plugin writes J as an integrand of one cell, d . u at the cell's
nodes weighted by ``node_weight`` (1/n on the region's nodes, shared among the cells
around each), and writes no derivative: femopt generates dJ/du, dJ/drho and dJ/dX from
the integrand, and its adjoint turns them into dJ/drho of the design.
"""

from __future__ import annotations

import numpy as np

from femopt.mesh.regions import Region
from femopt.objectives.integrand import IntegrandFunction
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


class MeanDisplacement(IntegrandFunction):
    """J = sum_c w_c (1/n) sum_{i in region} d . u_{c,i}."""

    name = "mean_displacement"
    summary = "Mean over a region's nodes of the displacement along a direction"
    Options = MeanDisplacementOptions
    region_selects = "nodes"  # options.region is a set of nodes: J is a nodal mean

    def __init__(self, options: MeanDisplacementOptions, model):
        physics = model.physics
        k = physics.dofs_per_node
        if len(options.direction) != k:
            raise ValueError(
                f"direction has {len(options.direction)} component(s); {physics.name} has "
                f"{k} per node ({', '.join(physics.dof_names)})")
        if not np.any(options.direction):
            raise ValueError("direction must not be the zero vector")
        super().__init__(options, model)  # selects the region's nodes and the load case
        self.d = list(options.direction)

    def integrand(self, ops, cell):
        w = cell.data["node_weight"]  # node a's share of 1/n
        k = len(self.d)
        return sum(w[a] * sum(self.d[c] * cell.u[a * k + c] for c in range(k))
                   for a in range(len(w)))


@hookimpl
def femopt_register_functions(registry) -> None:
    registry.add("function", MeanDisplacement)
