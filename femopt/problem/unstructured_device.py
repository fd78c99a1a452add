"""The design chain of a model on a mesh from a file, with every field on the device.

The unstructured counterpart of :mod:`femopt.problem.device_path` (whose
:class:`~femopt.problem.device_path.DevicePath` it extends: the design chain, the
evaluation with its scaling and heuristics and the cheap constraints are the same code).
One design iteration:

    x -> filters (the radius filters' weight matrices as device CSR, Heaviside) -> rho
      -> K = sum_e m(rho_e) K0_e into the fixed CSR pattern (GatherAssembler: one thread
         per CSR value; the K0_e of full material are computed once, on the host)
      -> node-block Jacobi PCG (NodeBlockPCG: femopt's fused CG kernels, the CSR SpMV
         kernel), warm-started from the previous state
      -> compliance f.u and dc/drho_e = -sum_c w_c m'(rho_e) u_ce^T K0_e u_ce by the
         generated design-sensitivity kernel of the physics' element kernel
      -> volume (a dot product) -> chain rule through the filters -> OC or MMA.

The host builds the pattern and the scatter map (``FixedPatternAssembler``) and the filter
weights once, the device the gather order; then only scalars reach it until the results are
written. With ``xp = numpy`` the same code runs on the CPU (the assembly is then the
assembler's bincount, the SpMV SciPy's and the sensitivity the generated kernel's NumPy
twin), which is how the CPU tests check it against the CPU path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.adjoint import generated
from femopt.assembly.csr_gather import GatherAssembler
from femopt.assembly.sparse import FixedPatternAssembler
from femopt.filters.radius import DensityFilter, SensitivityFilter
from femopt.filters.sparse_filter import SparseDensityFilter
from femopt.objectives.compliance import Compliance
from femopt.objectives.volume import Volume
from femopt.problem.device_path import PHYSICS, DevicePath, unsupported_chain
from femopt.solvers.csr_pcg import NodeBlockPCG

SOLVER = "pcg"
MAX_ITER = 20000  # CG iterations per solve when the GPU replaces the default solver
MEMORY_MARGIN = 1.25  # an estimate from array sizes, not a measurement: keep 25% in hand


def unsupported(model: Any, solver_type: str) -> str | None:
    """Why the GPU path cannot run ``model`` on its mesh from a file (None when it can)."""
    physics = model.physics
    if physics.name not in PHYSICS or not physics.symmetric:
        return (f"the GPU path covers the physics {', '.join(PHYSICS)}, not "
                f"{physics.name!r}")
    if physics.element_kernel() is None:
        return f"the physics {physics.name!r} declares no element kernel"
    if not isinstance(model.objective, Compliance):
        return (f"the GPU path minimizes compliance (or thermal_compliance), not "
                f"{model.objective.name!r}")
    if physics.fixed_element_matrices() is not None:
        return "the GPU path needs element matrices that scale with the design alone"
    if np.any(model.springs):
        return "the GPU path does not take springs"
    for b in model.bounds:
        if not isinstance(b.function, Volume):
            return f"the GPU path takes volume constraints only, not {b.function.name!r}"
    why = unsupported_chain(model)
    if why:
        return why
    if solver_type != SOLVER:
        return (f"the GPU path on a mesh from a file solves with pcg (block-Jacobi PCG on "
                f"the GPU), not {solver_type!r}")
    return None


def estimate_bytes(model: Any) -> int:
    """GPU memory a design iteration of ``model`` needs (bytes, an estimate from the sizes
    of its arrays). Builds the filters' weight matrices on the host (the path needs them
    anyway)."""
    n_cells = model.mesh.n_cells
    nd = int(np.shape(model.ke)[-1])
    k = model.physics.dofs_per_node
    entries = n_cells * nd * nd  # at most; entries on supported dofs drop out
    nnz = entries // 4  # tet4: ~5 entries per CSR value, hex8: ~3 (a node's 27 neighbours)
    filter_nnz = sum(f.H.nnz for f in model.filters
                     if isinstance(f, (DensityFilter, SensitivityFilter)))
    n_cases = len(model.case_names)
    n_dofs = model.n_dofs
    total = (entries * (8 + 4)             # sorted K0 entries and their cells
             + nnz * (8 + 4 + 8 + 8)       # CSR values, column indices, gather offsets, data + C
             + filter_nnz * 2 * (8 + 4)    # H and H^T
             + n_cells * (8 * 20 + 8 * 3)  # design fields, optimizer (MMA), cells
             + n_dofs * 8 * (12 + 4 * n_cases)  # CG vectors, states, loads, sensitivity
             + (n_dofs // k) * k * k * 8 * 3)  # node blocks and their inverses
    return int(MEMORY_MARGIN * total)


class UnstructuredDevicePath(DevicePath):
    """The design chain of ``model`` (a mesh from a file) with fields on ``xp``.

    Args:
        model: a built model that :func:`unsupported` accepts, with a ``pcg`` solver.
        xp: the array module of the fields (cupy, or numpy in tests).
    """

    def __init__(self, model: Any, xp: Any):
        self.model, self.xp = model, xp
        mesh = model.mesh
        free_mask = np.ones(model.n_dofs, dtype=bool)
        free_mask[model.fixed] = False
        free = np.flatnonzero(free_mask)
        self.n_dofs = model.n_dofs
        self.free = xp.asarray(free)
        pattern = FixedPatternAssembler(model.cell_dofs, model.n_dofs, free)
        self.assembly = GatherAssembler(pattern, np.asarray(model.ke, dtype=np.float64), xp)
        opts = model.solver.options
        self.solver = NodeBlockPCG(pattern.indptr, pattern.indices, free,
                                   model.physics.dofs_per_node, xp, opts.rtol, opts.max_iter)
        self.loads = xp.asarray(model.loads[:, free])  # (n_cases, n_free)
        self.weights = [float(w) for w in model.weights]
        self.u: list[Any] = [None] * len(self.weights)
        self.twins = [SparseDensityFilter(f.H, xp)
                      if isinstance(f, (DensityFilter, SensitivityFilter)) else None
                      for f in model.filters]
        self.passive_idx = xp.asarray(model.passive_idx)
        self.passive_val = xp.asarray(model.passive_val, dtype=xp.float64)
        self.volume_weights = {id(b.function): xp.asarray(b.function.weights)
                               for b in model.bounds}
        self.kernel = model.physics.element_kernel()
        self.points = xp.asarray(mesh.points, dtype=xp.float64)
        self.cells = xp.asarray(mesh.cells, dtype=xp.int64)
        # the compiled kernels of the element kernel, held for the run (compiled once)
        self._generated = None if xp is np else generated._GpuKernels(self.kernel)

    # -- analysis ------------------------------------------------------------------------

    def analyse(self, rho: Any) -> tuple[Any, Any]:
        """Assemble at ``rho`` and solve every load case (warm start from the last
        states); returns the interpolation's scale factors and their derivative."""
        m = self.model
        scale = m.interp.value(rho)
        dm = m.interp.derivative(rho)
        self.solver.update(self.assembly.assemble_data(scale))
        for c in range(len(self.u)):
            self.u[c] = self.solver.solve(self.loads[c], x0=self.u[c])
        return scale, dm

    def full_states(self) -> Any:
        """(n_cases, n_dofs) states with zeros on the supported dofs (on the device)."""
        full = self.xp.zeros((len(self.u), self.n_dofs))
        full[:, self.free] = self.xp.stack(self.u)
        return full

    def element_sensitivity(self, scale: Any, dm: Any, lam: Any, u: Any) -> Any:
        """dm_e sum_c lam_c,e^T (dK_e/dm) u_c,e by the generated kernel (or its twin)."""
        if self._generated is None:
            return generated.sensitivity(self.kernel, self.points, self.cells, scale, dm,
                                         lam, u)
        return self._generated.sensitivity(self.points, self.cells, scale, dm, lam, u)

    def values_and_gradients(self, x: Any) -> tuple[list[float], list[Any]]:
        """Values of the objective and the constraints and their gradients w.r.t. x."""
        xp = self.xp
        rho, inputs = self.physical(x)
        scale, dm = self.analyse(rho)
        values, grads = [], []
        for fn in self.model.functions():
            if isinstance(fn, Volume):
                w = self.volume_weights[id(fn)]
                values.append(float(w @ rho))
                grads.append(self.chain(w, inputs))
                continue
            # compliance: J = sum_c w_c f_c^T u_c; self-adjoint, lambda_c = -w_c u_c
            u = self.full_states()
            lam = -xp.asarray(self.weights)[:, None] * u
            values.append(sum(wc * float(xp.dot(self.loads[c], self.u[c]))
                              for c, wc in enumerate(self.weights)))
            grads.append(self.chain(self.element_sensitivity(scale, dm, lam, u), inputs))
        return values, grads

    def cheap_constraints(self, x: Any) -> np.ndarray:
        rho, _ = self.physical(x)
        return np.array([b.normalized(float(self.volume_weights[id(b.function)] @ rho))
                         for b in self.model.bounds])

    def linear_constraint(self) -> tuple[Any, float] | None:
        """(w, b) of the one volume constraint g(x) = w . x + b through linear filters
        (see :meth:`DevicePath.linear_constraint`); None otherwise."""
        m = self.model
        if len(m.bounds) != 1 or not all(isinstance(f, (DensityFilter, SensitivityFilter))
                                         for f in m.filters):
            return None
        bound = m.bounds[0]
        v = self.volume_weights[id(bound.function)]
        w = bound.sign_scale() * self.chain(v, [None] * len(m.filters))
        return w, bound.normalized(float(v[self.passive_idx] @ self.passive_val))

    def host_states(self) -> np.ndarray:
        """The last states (n_cases, n_dofs) on the host in femopt's dof numbering."""
        from femopt.backend import to_host

        return to_host(self.full_states())
