"""Functions written as a cell integrand and a reduction; their partials are generated.

A plugin author subclasses :class:`IntegrandFunction` and writes ``integrand(ops, cell)``:
plain scalar code of one cell (or one quadrature point) of one load case, returning one
scalar (two for a ratio). The scalars are arrays over cells and cases, dual numbers or
symbolic traces; ``ops`` gives the functions femopt differentiates (``sqrt``,
``exp``, ``log``, ``tanh``, ``abs``, ``max``, ``select_lt``). femopt reduces the values
(:mod:`femopt.objectives.reductions`) and derives dJ/du, dJ/drho and dJ/dX exactly by
forward-mode dual numbers (:mod:`femopt.adjoint.dual`), seeded on the nd state entries
and the density at once, and on the node coordinates in a second pass only when a shape
gradient is asked.

One entry: :meth:`IntegrandFunction.cell_terms` works on gathered cell arrays of any
array module (NumPy or CuPy, taken from the inputs); the CPU ``Function`` methods gather
u by the physics' cell dofs, call it, and scatter back with ``bincount``. On NumPy the
values and partials come from the integrand on arrays and duals; on CuPy from CUDA
kernels generated from its trace (:mod:`femopt.adjoint.integrand_codegen`: one thread
per case and cell, a dual evaluation per seed), equal to the NumPy route to rounding.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, NamedTuple

import numpy as np

from femopt.adjoint import integrand_codegen
from femopt.adjoint.dual import DUAL_OPS, Dual
from femopt.assembly.element_kernel import NUMPY_OPS, Ops
from femopt.assembly.elements import get_element
from femopt.backend import array_namespace
from femopt.mesh.regions import RegionError, select_cells, select_nodes
from femopt.objectives import integrand_check
from femopt.objectives.base import Function, State, case_weights
from femopt.objectives.cell import Cell
from femopt.objectives.reductions import Reduction

log = logging.getLogger(__name__)

POINTS = ("cell", "centre", "quadrature")
BUDGET = 1 << 22  # entries of one dual derivative array per chunk of cells


def node_weights(mesh: Any, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cells that touch ``nodes`` and weights w (n, n_nodes_per_cell) with
    sum_e sum_a w_ea f(node a of cell e) = the mean of f over ``nodes``: a nodal mean
    written as a sum over cells (each node shared by its cells)."""
    mark = np.zeros(mesh.n_nodes, dtype=bool)
    mark[nodes] = True
    touch = mark[mesh.cells]
    cells = np.flatnonzero(touch.any(axis=1))
    touch = touch[cells]
    valence = np.bincount(mesh.cells[cells][touch], minlength=mesh.n_nodes)
    count = np.maximum(valence[mesh.cells[cells]], 1)
    return cells, np.where(touch, 1.0 / (np.unique(nodes).size * count), 0.0)


class CellTerms(NamedTuple):
    """J and its partials over the function's cells: ``d_ue`` (n_cases, n_cells, nd),
    ``d_rho`` (n_cells,)."""

    value: float
    d_ue: Any
    d_rho: Any


class _Checked(type):
    """Runs the integrand probe once a function instance is fully built."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        obj.check_integrand()
        return obj


class IntegrandFunction(Function, metaclass=_Checked):
    """A function J = reduction over cells (and cases) of ``integrand(ops, cell)``.

    Subclasses write :meth:`integrand` and may set, as class or instance attributes:
    ``reduction`` (a :class:`Reduction`: sum, mean, ratio, pnorm or ks), ``points``
    ("cell", "centre": one point at the element's centre, or "quadrature"), ``params``
    and ``cell_data``. ``options.region`` (if any) restricts the cells, ``options.case``
    (if any) picks one load case; otherwise every case counts with its weight. With
    ``region_selects = "nodes"`` the region is a set of nodes: the cells are those that
    touch it and ``cell.data["node_weight"][a]`` weights node a of a cell so that a
    ``sum`` of ``w_a f(u_a)`` is the mean of f over the nodes.
    """

    reduction: ClassVar[Reduction] = Reduction("sum")
    generated_kernels: ClassVar[bool] = True  # on CuPy: generated CUDA, else dual arrays
    points: ClassVar[str] = "cell"
    region_selects: ClassVar[str] = "cells"

    def __init__(self, options, model):
        super().__init__(options, model)
        if self.points not in POINTS:
            raise ValueError(f"points must be one of {POINTS} (got {self.points!r})")
        mesh = model.mesh
        region = getattr(options, "region", None)
        self.cell_data: dict[str, np.ndarray] = {}  # arrays (len(cells), ...)
        try:
            if self.region_selects == "nodes":
                nodes = (np.arange(mesh.n_nodes) if region is None
                         else select_nodes(region, mesh))
                self.cells, self.cell_data["node_weight"] = node_weights(mesh, nodes)
            else:
                self.cells = (np.arange(mesh.n_cells) if region is None
                              else np.asarray(select_cells(region, mesh)))
        except RegionError as exc:
            raise ValueError(f"region: {exc}") from None
        case = getattr(options, "case", None)
        self.case_w = case_weights(model, case)
        if case is None:  # aggregations (pnorm, ks) take every case
            self.case_w_max = np.ones_like(self.case_w)
        else:
            self.case_w_max = self.case_w
        kernel = model.physics.element_kernel()
        self.params: dict[str, float] = dict(kernel.values) if kernel is not None else {}
        el = get_element(mesh.cell_type)
        if self.points == "quadrature":
            xi, wq = el.quad_points, el.quad_weights
        else:  # the centre, with the reference volume as its weight
            xi = el.ref_nodes.mean(axis=0, keepdims=True)
            wq = np.array([el.quad_weights.sum()])
        self._quad = [(el.shape(xi)[q].tolist(), el.grad(xi)[q].tolist(), float(wq[q]))
                      for q in range(xi.shape[0])]
        self._cache: tuple[Any, CellTerms] | None = None

    @property
    def n_points(self) -> int:
        """Values per cell and case: the quadrature points, or 1."""
        return len(self._quad) if self.points != "cell" else 1

    def integrand(self, ops: Ops, cell: Cell) -> Any:
        """One scalar per cell or point (a pair (numerator, denominator) for a ratio)."""
        raise NotImplementedError

    # -- backend-neutral --------------------------------------------------------------

    def cell_value(self, ue: Any, rho: Any, coords: Any) -> float:
        """J from gathered arrays of the function's cells (``self.cells``): ``ue``
        (n_cases, n_cells, nd), ``rho`` (n_cells,), ``coords`` (n_cells, n_nodes, dim),
        or (1, n_nodes, dim) for cells that are all translates of one (a uniform grid)
        when the integrand reads the coordinates only through their differences
        (gradients, volumes; not positions); NumPy or CuPy."""
        xp = array_namespace(ue, rho, coords)
        if self._kernels(xp):
            return self._reduce(integrand_codegen.values(self, ue, rho, coords))[0]
        vals, _ = self._evaluate(xp, ue, rho, coords, slice(None), False, False)
        return self._reduce(vals)[0]

    def cell_terms(self, ue: Any, rho: Any, coords: Any) -> CellTerms:
        """J, dJ/d(ue) (n_cases, n_cells, nd) and dJ/d(rho) (n_cells,) from gathered
        arrays of the function's cells (see :meth:`cell_value`), in their array module."""
        xp = array_namespace(ue, rho, coords)
        if self._kernels(xp):  # the generated CUDA kernels
            value, g = self._reduce(integrand_codegen.values(self, ue, rho, coords))
            return CellTerms(value, *integrand_codegen.partials(self, ue, rho, coords, g))
        value, g = self._reduce(self._evaluate(xp, ue, rho, coords, slice(None),
                                               False, False)[0])
        nd = ue.shape[2]
        d_ue = xp.zeros(ue.shape, dtype=ue.dtype)
        d_rho = xp.zeros(rho.shape, dtype=ue.dtype)
        for sl in self._chunks(ue.shape, nd + 1):
            _, dv = self._evaluate(xp, ue[:, sl], rho[sl], _rows(coords, sl), sl, True, False)
            gd = (g[:, None, :, sl] * dv).sum(axis=(0, 4))  # (S, c, e)
            d_ue[:, sl] = xp.moveaxis(gd[:nd], 0, 2)
            d_rho[sl] = gd[nd].sum(axis=0)
        return CellTerms(value, d_ue, d_rho)

    def _kernels(self, xp: Any) -> bool:
        """Whether the values and partials come from the generated kernels: on CuPy
        arrays, when ``generated_kernels`` is on and the integrand traces (else the dual
        numbers on arrays, with a log line saying why)."""
        if xp is np or not self.generated_kernels:
            return False
        if getattr(self, "_generated_source", None) is None:
            try:
                integrand_codegen.generated(self)
            except (TypeError, ValueError) as exc:
                log.warning("function '%s': no generated kernel (%s); its partials run "
                            "as array operations", self.name, exc)
                self.generated_kernels = False
                return False
        return True

    def coordinate_terms(self, ue: Any, rho: Any, coords: Any) -> Any:
        """dJ/d(coords) at fixed ue and rho: (n_cells, n_nodes, dim)."""
        xp = array_namespace(ue, rho, coords)
        _, g = self._reduce(self._evaluate(xp, ue, rho, coords, slice(None),
                                           False, False)[0])
        nn, dim = coords.shape[1:]
        out = xp.zeros(coords.shape, dtype=coords.dtype)
        for sl in self._chunks(ue.shape, nn * dim):
            _, dv = self._evaluate(xp, ue[:, sl], rho[sl], coords[sl], sl, False, True)
            gd = (g[:, None, :, sl] * dv).sum(axis=(0, 2, 4))  # (S, e)
            out[sl] = gd.T.reshape(-1, nn, dim)
        return out

    def _chunks(self, shape: tuple[int, ...], n_seeds: int) -> list[slice]:
        step = max(1, BUDGET // max(1, n_seeds * shape[0]))
        return [slice(s, min(s + step, shape[1])) for s in range(0, shape[1], step)]

    def _reduce(self, vals: Any) -> tuple[float, Any]:
        w = self.case_w_max if self.reduction.kind in ("pnorm", "ks") else self.case_w
        return self.reduction.apply(vals, w)

    def _evaluate(self, xp, ue, rho, coords, cells, seed_u: bool, seed_x: bool):
        """Values (n_out, c, e, q) and, when seeded, their derivatives (n_out, S, c, e, q)
        along the seeds: u entries then rho (``seed_u``), or coordinates (``seed_x``)."""
        n_c, n_e, nd = ue.shape
        nn, dim = coords.shape[1:]
        shape = (n_c, n_e)
        n_s = (nd + 1 if seed_u else 0) + (nn * dim if seed_x else 0)
        eye = xp.eye(max(n_s, 1), dtype=ue.dtype)

        def seeded(v, k):
            return Dual(xp.broadcast_to(v, shape),
                        xp.broadcast_to(eye[:, k, None, None], (n_s,) + shape))

        u = [seeded(ue[:, :, i], i) if seed_u else ue[:, :, i] for i in range(nd)]
        r = seeded(rho, nd) if seed_u else rho
        x = [[seeded(coords[:, a, d], a * dim + d) if seed_x else coords[:, a, d]
              for d in range(dim)] for a in range(nn)]
        data = {k: _columns(xp.asarray(v[cells])) for k, v in self.cell_data.items()}
        ops = DUAL_OPS if n_s else NUMPY_OPS
        n_out = self.reduction.n_out
        vals = xp.zeros((n_out, n_c, n_e, len(self._quad) if self.points != "cell" else 1),
                        dtype=ue.dtype)
        dvals = xp.zeros((n_out, n_s) + vals.shape[1:], dtype=ue.dtype) if n_s else None
        for q, (n, dn, w) in enumerate(self._quad if self.points != "cell" else [(None,) * 3]):
            cell = Cell(u, r, self.model.interp, x, n, dn, w, dict(self.params), data)
            parts = integrand_check.point_values(self.integrand(ops, cell), n_out, shape)
            for o, part in enumerate(parts):
                v = part.v if isinstance(part, Dual) else part
                vals[o, :, :, q] = v
                if isinstance(part, Dual):
                    dvals[o, :, :, :, q] = part.d
        return vals, dvals

    def check_integrand(self) -> None:
        """Run the integrand on a probe of up to 3 cells and 2 cases, with duals.

        Raises:
            IntegrandError naming the function and the integrand's line.
        """
        k = min(3, self.cells.size)
        if k == 0:
            raise ValueError("the function selects no cell")
        cells = self.cells[:k]
        mesh = self.model.mesh
        rng = np.random.default_rng(0)
        nd = mesh.nodes_per_cell * self.model.physics.dofs_per_node
        ue = rng.standard_normal((2, k, nd))
        rho = rng.uniform(0.3, 0.9, k)
        integrand_check.probe(self, ue, rho, mesh.cell_coords(cells), slice(0, k))

    # -- the CPU Function interface (full-dof vectors) ----------------------------------

    def _gather(self, state: State) -> tuple[Any, Any, Any]:
        mesh = state.model.mesh
        points = mesh.points if state.geometry is None else state.geometry.points
        dofs = state.model.cell_dofs[self.cells]
        return (state.u[:, dofs], state.rho[self.cells], points[mesh.cells[self.cells]])

    def _terms(self, state: State) -> CellTerms:
        if self._cache is None or self._cache[0] is not state:
            self._cache = (state, self.cell_terms(*self._gather(state)))
        return self._cache[1]

    def value(self, state: State) -> float:
        if self._cache is not None and self._cache[0] is state:
            return self._cache[1].value
        return self.cell_value(*self._gather(state))

    def partial_u(self, state: State):
        d_ue = self._terms(state).d_ue
        if not d_ue.any():
            return None  # J does not depend on u here: no adjoint solve
        dofs = state.model.cell_dofs[self.cells].ravel()
        n = state.u.shape[1]
        return np.stack([np.bincount(dofs, weights=d_ue[c].ravel(), minlength=n)
                         for c in range(d_ue.shape[0])])

    def partial_rho(self, state: State):
        return np.bincount(self.cells, weights=self._terms(state).d_rho,
                           minlength=state.rho.shape[0])

    def partial_x(self, state: State):
        if state.geometry is None:
            return None
        from femopt.shape.geometry import gather

        d_x = self.coordinate_terms(*self._gather(state))
        return gather(state.model.mesh.cells[self.cells], d_x, state.geometry.points.shape[0])


def _columns(a: Any) -> Any:
    return [a[:, j] for j in range(a.shape[1])] if a.ndim == 2 else a


def _rows(coords: Any, sl: slice) -> Any:
    """The chunk's coordinates; one shared cell (a uniform grid) stays as it is."""
    return coords if coords.shape[0] == 1 else coords[sl]
