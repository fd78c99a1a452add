"""The evaluation backend of a distributed run: the grid path on slabs.

:class:`DistributedGridPath` is a :class:`~femopt.evaluation.device.DevicePath` whose
arrays are a rank's part of the grid in the internal order (:class:`~femopt.parallel.
orientation.Orientation`), NumPy arrays on the CPU, CuPy arrays on the GPU:

- the design x and the densities rho: the owned cells (cell layers [o0, o1) of the cut
  axis);
- states, loads, functionals: the slab's kept nodes (ghost layers filled), grid layout;
- the density and sensitivity filters: the grid stencil on the owned cells and ghost
  layers as wide as the filter's reach (:class:`~femopt.parallel.stencil.SlabStencil`),
  pointwise filters (Heaviside) as they are;
- solves: :class:`~femopt.parallel.multigrid.SlabMultigrid`; the adjoint term one pass
  over the owned cells;
- every sum over the grid (compliance, volume, linear functionals, OC's volume, the
  design change) a deterministic reduction (:mod:`femopt.parallel.comm`), so the run is
  the same on any number of ranks, and the one-rank run is its reference.

Rank 0 gathers what the results directory needs (:meth:`DistributedGridPath.gather_cells`,
:meth:`final_analysis`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.sparse_vector import (SparseVector, as_sparse, constant_value,
                                           to_design)
from femopt.assembly.matrix_free import gather_cells
from femopt.backend import to_host
from femopt.errors import InputError
from femopt.evaluation.device import DevicePath, capability
from femopt.objectives.base import State
from femopt.parallel.comm import Comm
from femopt.parallel.multigrid import SlabMultigrid
from femopt.parallel.operators import layer_matmul
from femopt.parallel.reductions import Reductions
from femopt.parallel.slab_conditions import kept_mask, kept_values
from femopt.parallel.partition import rank_plan, slab_bytes
from femopt.parallel.slabs import Slab


# -- what runs distributed ----------------------------------------------------------------

def prepare(model: Any, device: str | None, array_module: Any = None) -> Any:
    """Set up a distributed run: the device (the CPU, or with ``--device gpu`` each rank's
    GPU), the multigrid solver (the problem's, or a default one), and what the
    distributed path cannot take refused. Returns the array module of the GPU path
    (``array_module`` when given: NumPy runs its CPU twin), or None for the CPU; CuPy or
    NCCL missing is an InputError before any work."""
    from femopt.solvers.multigrid import MultigridOptions, MultigridSolver

    requested = device if device is not None else model.problem.device
    xp = None
    if requested == "gpu" or array_module is not None:
        xp = array_module if array_module is not None else gpu_module(model, device)
    if model.shape:
        raise InputError("a shape design runs on one process")
    model.device = "cpu" if xp is None else "gpu"
    if model.mesh.grid is None:
        raise InputError("this problem cannot run distributed: a distributed run needs "
                         "a structured grid (mesh type 'structured'); meshes from files "
                         "run on one process")
    if "solver" not in model.loaded.located.data:
        model.solver = MultigridSolver(MultigridOptions())
        model.solver.bind(model.mesh, model.physics.dofs_per_node)
    why = unsupported(model)
    if why is not None:
        raise InputError(f"this problem cannot run distributed: {why}")
    return xp


def gpu_module(model: Any, device: str | None) -> Any:
    """CuPy, once it, NCCL and a GPU are found to be there; else an InputError (located at
    the problem file's ``device`` when the file asks for the GPU, ``device`` None)."""
    from femopt.parallel.comm_device import gpu_modules

    try:
        return gpu_modules()[0]
    except InputError as exc:
        if device is None:
            raise model.loaded.error(("device",), str(exc)) from None
        raise InputError(f"--device gpu: {exc}") from None


def unsupported(model: Any) -> str | None:
    """Why a distributed run cannot take ``model`` (None when it can)."""
    if model.mesh.grid is None:
        return ("a distributed run needs a structured grid (mesh type 'structured'); "
                "meshes from files run on one process")
    why = capability(model)
    if why:
        return (why.replace("on the GPU", "distributed")
                .replace("the GPU paths solve", "the distributed path solves")
                .replace("the GPU paths", "the distributed path"))
    if np.ndim(model.ke) != 2:
        return "a distributed run needs one element matrix for the whole grid"
    if getattr(model, "robust", None) is not None:
        return "the robust formulation (design.robust) does not run distributed yet"
    for fn in model.functions():
        for part in _leaves(fn):
            if part.linear_form() is None:
                return (f"the function {part.name!r} is not linear in the states; a "
                        "distributed run takes linear forms (compliance, volume, "
                        "displacement, mean temperature, ...) only so far")
    from femopt.filters.base import Filter

    for f in model.filters:
        if type(f).slab_twin is Filter.slab_twin and not f.pointwise:
            return (f"the filter {f.name!r} does not run distributed yet (density, "
                    "sensitivity and pointwise filters such as heaviside do)")
    if not getattr(model.solver, "distributed", False):
        return (f"a distributed run solves with the multigrid solver, not "
                f"{model.solver.name!r}")
    if model.solver.options.coarse_operator not in ("auto", "galerkin"):
        return ("a distributed run builds Galerkin coarse levels (multigrid "
                "coarse_operator: galerkin)")
    if not getattr(model.optimizer, "distributed", False):
        return (f"the optimizer {model.optimizer.name!r} does not run distributed (it "
                "does not take its sums over the design from problem.reductions)")
    return None


def _leaves(fn: Any) -> list[Any]:
    if fn.linear_form() is not None:
        return [fn]
    terms = getattr(fn, "terms", None)
    return [t for term in terms for t in _leaves(term)] if terms else [fn]


# -- the path -----------------------------------------------------------------------------

class DistributedGridPath(DevicePath):
    """The design chain of ``model`` (a structured grid) on rank ``comm.rank`` of
    ``comm.size``; see the module docstring. ``xp``: None on the CPU; CuPy for the GPU
    (each rank's slab on its GPU, halos and sums through
    :func:`~femopt.parallel.comm_device.device_comm`), or NumPy for the GPU path's CPU
    twin. ``comm`` stays the host communicator (output, checkpoints, decisions)."""

    def __init__(self, model: Any, comm: Comm, xp: Any = None):
        self.comm = comm
        self.on_device = xp is not None
        if xp is None:
            xp, dcomm = np, comm
        else:
            from femopt.parallel.comm_device import device_comm, sharing_note

            dcomm = device_comm(comm, xp)
            xp = dcomm.xp
            if (note := sharing_note(dcomm)) is not None:
                model.device_notes.append(note)
        k = model.physics.dofs_per_node
        self.plan = rank_plan(model, comm.size)
        self.orient, self.glayout = self.plan.orient, self.plan.layout
        bounds, n_dist = self.plan.bounds, self.plan.distributed
        self.model_layout = GridLayout(tuple(int(n) for n in model.mesh.grid.shape), k)
        self.slab = slab = Slab(self.glayout, dcomm, bounds, xp=xp)
        if self.on_device:
            from femopt.parallel.comm_device import check_memory

            check_memory(slab_bytes(model, self.plan, slab.local), dcomm)
        self.ke = self.orient.element_matrix(model.ke, k)
        # the supports as sorted internal grid-layout positions: no whole-grid mask
        self.fixed_index = np.sort(self.orient.dofs_in(np.asarray(model.fixed), k))
        self.kept_fixed = kept_mask(slab, self.fixed_index)
        self.mg = SlabMultigrid(model.solver.options, self.plan.levels, self.ke, slab, n_dist)
        self.springs = self._slab_springs(model.spring_nonzeros)
        spacing = self.orient.internal(tuple(model.mesh.grid.spacing))
        stages = [f.slab_twin(slab, spacing) for f in model.filters]
        self.reductions = Reductions(slab)
        loads = self._slab_loads(model.load_nonzeros)
        super().__init__(model, xp, loads, stages)
        # the passive cells this rank owns, from their indices
        mine, local = self._own_cells(model.passive_idx)
        order = np.argsort(local)
        self.passive_idx = xp.asarray(local[order])
        self.passive_val = xp.asarray(np.asarray(model.passive_val, dtype=np.float64)
                                      [mine][order])

    # -- layouts -----------------------------------------------------------------------

    def _to_states(self, a: np.ndarray) -> np.ndarray:
        """A whole dof vector (femopt's numbering; a functional's) as this slab's kept
        part in the internal layout, zero on supported dofs."""
        k = self.glayout.k
        out = self.slab.node_part(self.orient.nodes_in(self.model_layout.from_dofs(a), k))
        out[self.kept_fixed] = 0.0
        return out

    def _slab_loads(self, nz: Any) -> Any:
        """(n_cases, kept node dofs) this slab's loads from their nonzeros
        (:class:`~femopt.evaluation.load_nonzeros.LoadNonzeros`), zero on supported
        dofs: the kept part of each dense vector moved to the internal layout, with no
        vector of the whole grid."""
        grid = self.orient.dofs_in(nz.index, self.glayout.k)
        which, local = self.slab.kept_positions(grid)
        out = np.zeros((len(nz), self.slab.local.n_dofs))
        out[:, local] = nz.values[:, which]
        out[:, to_host(self.kept_fixed)] = 0.0
        return self.slab.xp.asarray(out)

    def _slab_springs(self, springs: SparseVector) -> tuple[Any, Any] | None:
        """(kept-dof indices, stiffness) of this slab's springs off the supports, from
        their nonzeros (:attr:`Model.spring_nonzeros`), or None; the fine level solved
        whole (no level cut) gets the whole grid's, a few entries."""
        if not springs.any():
            return None
        pos = self.orient.dofs_in(springs.index, self.glayout.k)
        keep = (springs.values != 0.0) & ~np.isin(pos, self.fixed_index)
        order = np.argsort(pos[keep])
        idx, k = pos[keep][order], springs.values[keep][order]
        self.mg.set_springs_full(idx, k)
        which, local = self.slab.kept_positions(idx)
        if not local.size:
            return None
        xp = self.slab.xp
        return xp.asarray(local), xp.asarray(k[which])

    def _functional_states(self, a: Any) -> Any:
        """A linear form's functional as this slab's kept part in the internal layout,
        zero on supported dofs: from its nonzeros when it is a
        :class:`~femopt.assembly.sparse_vector.SparseVector` (no vector of the whole
        grid), else :meth:`_to_states` of the whole vector."""
        if not isinstance(a, SparseVector):
            return self._to_states(a)
        out = kept_values(self.slab, self.orient.dofs_in(a.index, self.glayout.k),
                          a.values, a.fill)
        out[to_host(self.kept_fixed)] = 0.0
        return self.slab.xp.asarray(out)

    def _to_cells(self, v: Any) -> Any:
        """A per-cell host vector (femopt's cell order) as this rank's owned cells: a
        constant view stays one number at stride 0 (as on one GPU,
        :meth:`DevicePath._to_cells`); made on the slab from its entries when it is a
        :class:`~femopt.assembly.sparse_vector.SparseVector`, else cut from it."""
        c = constant_value(v)
        if c is not None:
            return to_design(self.slab.xp, np.broadcast_to(np.float64(c),
                                                           (self.slab.n_own_cells,)))
        v = as_sparse(v)
        if not isinstance(v, SparseVector):
            return self.slab.cell_part(self.orient.cells_in(to_host(v)))
        out = np.full(self.slab.n_own_cells, v.fill)
        which, local = self._own_cells(v.index)
        out[local] = v.values[which]
        return self.slab.xp.asarray(out)

    def _own_cells(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which, local): which of femopt's cell numbers ``cells`` this rank owns, and
        their positions among its owned cells."""
        internal = self.orient.cell_index_in(np.asarray(cells, dtype=np.int64))
        o0, o1 = self.slab.own
        p = self.slab.layer_cells
        which = (internal >= o0 * p) & (internal < o1 * p)
        return which, internal[which] - o0 * p

    def local_design(self, x: np.ndarray) -> np.ndarray:
        """A whole design (femopt's cell order) as this rank's owned cells."""
        return self._to_cells(x)

    def local_design_of(self, fixed_idx: np.ndarray, fixed_val: np.ndarray,
                        x: np.ndarray) -> Any:
        """This rank's owned cells of a design-sized host array: made on the slab from
        its value when ``x`` is a constant (a broadcast view), with ``fixed_val`` on the
        cells ``fixed_idx`` (the passive ones); else the owned part of ``x``."""
        if not (x.ndim == 1 and x.size and x.strides == (0,)):
            return self.local_design(x)
        out = np.full(self.slab.n_own_cells, float(x[0]))
        which, local = self._own_cells(fixed_idx)
        out[local] = np.asarray(fixed_val, dtype=np.float64)[which]
        return self.slab.xp.asarray(out)

    def gather_cells(self, a: np.ndarray) -> np.ndarray | None:
        """Every rank's owned cells of ``a`` as one array in femopt's cell order, on rank
        0 (None on the others). Collective."""
        full = self.slab.gather_cells(a, root_only=True)
        return None if full is None else self.orient.cells_out(full)

    def gather_states(self, u: np.ndarray) -> np.ndarray | None:
        """(n_cases, n_dofs) femopt's numbering, on rank 0. Collective."""
        k = self.glayout.k
        out = []
        for c in range(u.shape[0]):
            full = self.slab.gather_nodes(u[c], root_only=True)
            if full is not None:
                out.append(self.model_layout.to_dofs(self.orient.nodes_out(full, k)))
        return np.stack(out) if out else None

    # -- reductions --------------------------------------------------------------------

    def _loads_dot(self, u: Any) -> np.ndarray:
        return np.array(self.slab.dots([(self.loads[c], u[c]) for c in range(u.shape[0])],
                                       "functions"))

    def _functionals_dot(self, u: Any, a: Any) -> np.ndarray:
        n_c, n_g = u.shape[0], a.shape[0]
        v = self.slab.dots([(u[c], a[g]) for c in range(n_c) for g in range(n_g)],
                           "functions")
        return np.array(v).reshape(n_c, n_g)

    def _cell_dot(self, v: Any, rho: Any) -> float:
        return self.slab.cell_dots([(v, rho)], "functions")[0]

    def _passive_dot(self, v: Any) -> float:
        pv = self.xp.zeros_like(v)
        pv[self.passive_idx] = self.passive_val
        return self._cell_dot(v, pv)

    def _all_finite(self, a: Any) -> bool:
        return not self.comm.any(not bool(self.xp.isfinite(a).all()))

    # -- operator, solve, adjoint term -----------------------------------------------------

    def _kept_cells(self, own: np.ndarray) -> np.ndarray:
        s = self.slab
        kept = self.xp.empty(s.local.n_cells, dtype=own.dtype)
        kept[s.own_cell_slice] = own
        return s.exchange_cells(kept)

    def _set_operator(self, scale: Any) -> None:
        self.mg.update(self._kept_cells(scale), self.fixed_index, self.springs)

    def _solve(self, rhs: Any, x0: Any) -> tuple[Any, int]:
        x = self.mg.solve(rhs, x0=x0)
        return x, self.mg.last.iterations

    def _adjoint_term(self, u: Any, mu: Any, beta: np.ndarray, a: np.ndarray, scale: Any,
                      dm: Any) -> Any:
        """dm_e sum_c lambda_c,e^T K0 u_c,e on the owned cells (one GEMM per cell layer)."""
        s = self.slab
        lay, own, p = s.local, s.own_cell_slice, s.layer_cells
        a = np.asarray(to_host(a), dtype=np.float64).reshape(len(beta), -1)
        beta = to_host(beta)
        q = self.xp.zeros(s.n_own_cells)
        for c in range(u.shape[0]):
            lam = float(beta[c]) * u[c]
            for g in range(0 if mu is None else mu.shape[0]):
                if a[c, g] != 0.0:
                    lam = lam + float(a[c, g]) * mu[g]
            ue = gather_cells(lay, u[c])[:, own]
            le = gather_cells(lay, lam)[:, own]
            fe = layer_matmul(self.ke, ue, p, left=True)
            q += (le * fe).sum(axis=0)
        return dm * q

    def host_states(self) -> np.ndarray | None:
        return self.gather_states(self.u)

    def global_max(self, value: float) -> float:
        return self.comm.max(value)

    def design_final(self, rho: Any, lazy: bool = False
                     ) -> tuple[list[float], np.ndarray | None, State | None]:
        """Values on every rank; densities and states gathered on rank 0 (None on the
        others), whether ``lazy`` or not. Collective."""
        m = self.model
        self.analyse(rho)
        values = self.function_terms(rho, None, None, u=self.u)[0]
        self.final_rho = to_host(rho)  # this rank's, for the per-rank pieces of the results
        rho_full = self.gather_cells(rho)
        states = self.host_states()
        if rho_full is None:
            return values, None, None
        return values, rho_full, State(rho_full, states, m.loads, m.weights, m)
