"""Von Mises stress aggregated by a p-norm, with the qp-relaxed stress interpolation.

The stress of cell e in load case c is taken at the cell centre with the solid's
stiffness and relaxed by the density (the "qp" approach: stiffness penalized by rho^p,
stress by rho^q with q < p, so that void cells carry no spurious stress singularity):

    s_ce = eta(rho_e) S_e u_c,e,   S_e = D B_e(centre),   eta(rho) = rho^q
    v_ce = sqrt(s_ce^T V s_ce)      (von Mises; V the Voigt quadratic form)
    J    = (sum_{c,e} v_ce^P)^(1/P)

J approaches max v_ce from above as P grows. Its derivatives:

    dJ/dv_ce       = J^(1-P) v_ce^(P-1)
    dJ/du_c,e      = dJ/dv_ce * eta_e S_e^T V s_ce / v_ce        (the adjoint load)
    partial J/drho_e = sum_c dJ/dv_ce * eta'(rho_e) v0_ce,   v0 the unrelaxed stress
    partial J/dX     = sum_{c,e} dJ/dv_ce * eta_e (V s0_ce)^T (dS_e/dX u_c,e) / v0_ce

At moved nodes (``state.geometry``, shape optimization) S_e is that of the moved cell;
the last line is its explicit dependence on the node coordinates X.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from femopt.mesh.regions import Region, RegionError, select_cells
from femopt.objectives.base import Function, State
from femopt.plugins.registry import Options


def von_mises_form(dim: int) -> np.ndarray:
    """V with v^2 = s^T V s for Voigt stresses (2D plane stress: xx, yy, xy)."""
    if dim == 2:
        return np.array([[1.0, -0.5, 0.0], [-0.5, 1.0, 0.0], [0.0, 0.0, 3.0]])
    v = np.full((6, 6), 0.0)
    v[:3, :3] = -0.5
    v[np.arange(3), np.arange(3)] = 1.0
    v[np.arange(3, 6), np.arange(3, 6)] = 3.0
    return v


class StressOptions(Options):
    p: float = Field(8.0, ge=1)
    """Exponent P of the p-norm (>= 1; larger is closer to the maximum, less smooth)."""
    q: float = Field(0.5, gt=0)
    """Exponent q of the stress relaxation eta(rho) = rho^q (0 < q < the SIMP penalty)."""
    region: Region | None = None
    """Cells whose stress counts (default: all; leave out cells at a re-entrant corner
    or a load point to ignore their singularity)."""


class StressPNorm(Function):
    """(sum_{c,e} v_ce^P)^(1/P) of the qp-relaxed von Mises stresses."""

    name = "stress_pnorm"
    summary = "p-norm of the qp-relaxed von Mises stress (elasticity), objective or constraint"
    Options = StressOptions
    label = "stress"
    positive_limit = True

    def __init__(self, options: StressOptions, model):
        super().__init__(options, model)
        physics = model.physics
        if not hasattr(physics, "stress_matrices"):
            raise ValueError(f"{self.name} needs linear_elasticity; this problem's physics "
                             f"is {physics.name!r}")
        mesh = model.mesh
        if options.region is None:
            self.cells = np.arange(mesh.n_cells)
        else:
            try:
                self.cells = select_cells(options.region, mesh)
            except RegionError as exc:
                raise ValueError(f"region: {exc}") from None
        coords = mesh.points[mesh.cells[self.cells[:1] if mesh.grid is not None
                                        else self.cells]]
        self.S = physics.stress_matrices(coords)  # (1 or n, nv, nd)
        self.V = von_mises_form(mesh.dim)
        self.dofs = model.cell_dofs[self.cells]

    def _stresses(self, state: State):
        # value, partial_u and partial_rho all ask for the same state's stresses
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is state:
            return cached[1]
        self._cache = (state, self._compute_stresses(state))
        return self._cache[1]

    def _coords(self, state: State) -> np.ndarray:
        """Node coordinates of the function's cells at the state's geometry."""
        return state.geometry.points[state.model.mesh.cells[self.cells]]

    def _compute_stresses(self, state: State):
        rho = state.rho[self.cells]
        q = self.options.q
        eta = rho**q
        S = self.S if state.geometry is None else \
            state.model.physics.stress_matrices(self._coords(state))
        S = np.broadcast_to(S, (len(self.cells),) + S.shape[1:])
        ue = state.u[:, self.dofs]  # (c, e, nd)
        s0 = np.einsum("evj,cej->cev", S, ue, optimize=True)
        v0 = np.sqrt(np.maximum(np.einsum("cev,vw,cew->ce", s0, self.V, s0), 0.0))
        return rho, eta, s0, v0, S

    def value(self, state: State) -> float:
        _, eta, _, v0, _ = self._stresses(state)
        return float(np.linalg.norm((eta * v0).ravel(), ord=self.options.p))

    def _dj_dv(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        P = self.options.p
        j = float(np.linalg.norm(v.ravel(), ord=P))
        if j == 0.0:
            return j, np.zeros_like(v)
        return j, (v / j) ** (P - 1.0)

    def _stress_weights(self, state: State) -> np.ndarray:
        """dJ/ds0_ce = dJ/dv_ce eta_e V s0_ce / v0_ce (0 where a cell carries no stress)."""
        _, eta, s0, v0, _ = self._stresses(state)
        _, g = self._dj_dv(eta * v0)
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(v0 > 0, g * eta / np.where(v0 > 0, v0, 1.0), 0.0)
        return np.einsum("vw,cew->cev", self.V, s0) * coef[..., None]

    def partial_u(self, state: State):
        S = self._stresses(state)[4]
        vs = self._stress_weights(state)
        fe = np.einsum("evj,cev->cej", S, vs, optimize=True)
        n = state.u.shape[1]
        return np.stack([np.bincount(self.dofs.ravel(), weights=fe[c].ravel(), minlength=n)
                         for c in range(fe.shape[0])])

    def partial_x(self, state: State):
        if state.geometry is None:
            return None
        from femopt.shape.geometry import gather

        per_cell = state.model.physics.stress_coordinate_derivative(
            self._coords(state), state.u[:, self.dofs], self._stress_weights(state))
        return gather(state.model.mesh.cells[self.cells], per_cell,
                      state.geometry.points.shape[0])

    def partial_rho(self, state: State):
        rho, eta, _, v0, _ = self._stresses(state)
        _, g = self._dj_dv(eta * v0)
        q = self.options.q
        with np.errstate(divide="ignore", invalid="ignore"):
            deta = np.where(rho > 0, q * rho ** (q - 1.0), 0.0)
        return np.bincount(self.cells, weights=(g * v0).sum(axis=0) * deta,
                           minlength=state.rho.shape[0])
