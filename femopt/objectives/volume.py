"""Volume fraction of the physical density field."""

from __future__ import annotations

import numpy as np

from femopt.objectives.base import Function, State, cell_volumes
from femopt.objectives.linear_form import LinearForm
from femopt.plugins.registry import Options


class VolumeOptions(Options):
    pass


class Volume(Function):
    """sum_e rho_e v_e / sum_e v_e. At moved nodes (``state.geometry``, shape
    optimization) the volumes are those of the moved cells and the denominator stays the
    initial mesh's volume: v(X) / v(X0)."""

    name = "volume"
    summary = "Volume fraction of the design (no solve needed)"
    Options = VolumeOptions
    needs_state = False

    def __init__(self, options, model):
        super().__init__(options, model)
        v = cell_volumes(model.mesh)
        total = v.sum()
        # a grid's equal volumes stay one value (a view; 8 bytes a cell saved)
        self.weights = (np.broadcast_to(v[0] / total, v.shape) if model.mesh.grid is not None
                        else v / total)
        self.natural_scale = float(v.sum())  # volume fraction -> volume

    def linear_form(self) -> LinearForm:
        return LinearForm(rho_weights=np.asarray(self.weights, dtype=np.float64))

    def rho_only_value(self, rho) -> float:
        return float(self.weights @ rho)

    def value(self, state: State) -> float:
        if state.geometry is not None:
            return float(state.geometry.cell_volumes @ state.rho) / self.natural_scale
        return self.rho_only_value(state.rho)

    def partial_rho(self, state: State):
        if state.geometry is not None:
            return state.geometry.cell_volumes / self.natural_scale
        return self.weights

    def partial_x(self, state: State):
        if state.geometry is None:
            return None
        return state.geometry.volume_derivative(state.rho) / self.natural_scale
