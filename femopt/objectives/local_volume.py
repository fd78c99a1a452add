"""A bound on the size of solid members: local volume fractions aggregated into one
constraint.

The local volume fraction of cell e is the weighted mean of the densities around it,
v_e = (H rho)_e / (H 1)_e, with the cone weights of a radius (the density filter's). A
member thicker than about the radius has cells whose neighbourhood is all solid
(v_e near 1); bounding max_e v_e below 1 forces holes into thick members. The maximum is
replaced by the p-mean

    J = ((1/n) sum_e v_e^p)^(1/p),

which underestimates it (by a factor down to n^(-1/p)); choose the bound accordingly.
J depends on the densities alone (no adjoint solve). On the GPU paths it runs through
:meth:`LocalVolume.cell_terms` with the weights as a device CSR matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from femopt.backend import array_namespace
from femopt.filters.base import radius_weights
from femopt.objectives.base import Function, State
from femopt.plugins.registry import Options


class LocalVolumeOptions(Options):
    radius: float = Field(gt=0)
    """Radius of the neighbourhood, about the largest member thickness allowed."""
    p: float = Field(16.0, ge=1)
    """Exponent of the p-mean that stands for the maximum."""


class LocalVolume(Function):
    """The p-mean of the local volume fractions (use as a constraint with ``max`` < 1)."""

    name = "local_volume"
    summary = "p-mean of local volume fractions: a bound on the size of solid members"
    Options = LocalVolumeOptions
    needs_state = False
    positive_limit = True

    def __init__(self, options: LocalVolumeOptions, model):
        super().__init__(options, model)
        h = model.mesh.min_cell_size()
        if options.radius <= h:
            raise ValueError(f"radius {options.radius:g} is not larger than the smallest "
                             f"cell ({h:g}): every neighbourhood would be one cell")
        self._host = radius_weights(model.mesh, options.radius)
        self._device: dict[Any, Any] = {}

    def _weights(self, xp: Any) -> tuple[Any, Any, Any]:
        """(H, H^T, 1 / row sums) on ``xp``."""
        if xp is np:
            h, hs = self._host
            return h, h.T.tocsr(), 1.0 / hs
        if xp not in self._device:
            import cupyx.scipy.sparse as csp

            h, hs = self._host
            self._device[xp] = (csp.csr_matrix(h), csp.csr_matrix(h.T.tocsr()),
                                xp.asarray(1.0 / hs))
        return self._device[xp]

    def _terms(self, rho: Any) -> tuple[float, Any]:
        xp = array_namespace(rho)
        h, ht, inv = self._weights(xp)
        v = (h @ rho) * inv
        p, n = self.options.p, rho.shape[0]
        mean = float((v**p).sum()) / n
        value = mean ** (1.0 / p)
        # dJ/dv_e = J^(1-p) v_e^(p-1) / n, then through v = H rho / Hs
        dv = value ** (1.0 - p) * v ** (p - 1.0) / n
        return value, ht @ (dv * inv)

    def rho_only_value(self, rho: Any) -> float:
        return self._terms(rho)[0]

    def value(self, state: State) -> float:
        return self._terms(state.rho)[0]

    def partial_rho(self, state: State):
        return self._terms(state.rho)[1]

    def cell_terms(self, ue: Any, rho: Any, coords: Any):
        """The device paths' form: no dependence on the states."""
        value, d_rho = self._terms(rho)
        xp = array_namespace(rho)
        return value, xp.zeros(ue.shape, dtype=ue.dtype), d_rho
