"""The design chain of a model on a mesh from a file, with every field on the device.

The unstructured counterpart of :mod:`femopt.evaluation.grid_device`: the design chain,
the functions, the adjoint solves with warm starts and the evaluation are
:class:`~femopt.evaluation.device.DevicePath`'s; this path keeps its states on the free
dofs and supplies the operator, the solve and the adjoint term. One design iteration:

    x -> filters (linear filters' weights as device CSR, pointwise projections) -> rho
      -> K = sum_e m(rho_e) K0_e into the fixed CSR pattern (GatherAssembler: one thread
         per CSR value; the K0_e of full material are computed once, on the host)
      -> node-block Jacobi PCG (NodeBlockPCG: femopt's fused CG kernels, the CSR SpMV
         kernel) or, with ``solver: {type: amg}``, smoothed-aggregation AMG-PCG
         (DeviceAMGPCG: structure once per mesh, values per design on the device),
         warm-started from the previous state
      -> adjoint solves K mu_g = -a_g (same PCG, warm-started) for displacement-type terms
      -> dJ/drho_e = m'(rho_e) sum_c lambda_ce^T K0_e u_ce by the generated
         design-sensitivity kernel of the physics' element kernel
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
from femopt.backend import to_host
from femopt.evaluation.device import DevicePath, capability
from femopt.evaluation.device_forms import integrand_bytes
from femopt.solvers.csr_pcg import NodeBlockPCG
from femopt.solvers.device_amg import DeviceAMGPCG

MAX_ITER = 20000  # CG iterations per solve when the GPU replaces the default solver
MEMORY_MARGIN = 1.25  # an estimate from array sizes, not a measurement: keep 25% in hand


def unsupported(model: Any, solver: str | None) -> str | None:
    """Why the GPU path cannot run ``model`` on its mesh from a file (None when it can);
    ``solver`` names a solver the problem asks for that does not run there."""
    why = capability(model)
    if why:
        return why
    if np.any(model.springs):
        return "the GPU path on a mesh from a file does not take springs"
    eigen = next((fn for fn in model.functions() if fn.eigen_problem() is not None), None)
    if eigen is not None:
        return (f"the function {eigen.name!r} (of eigenvalues) runs on the CPU and the GPU "
                "grid path, not on a mesh from a file")
    if solver is not None:
        return (f"the GPU path on a mesh from a file solves with pcg (block-Jacobi PCG on "
                f"the GPU) or amg (smoothed-aggregation AMG-PCG), not {solver!r}")
    return None


def estimate_bytes(model: Any) -> int:
    """GPU memory a design iteration of ``model`` needs (bytes, an estimate from the sizes
    of its arrays, its integrand functions' included: states on the free dofs, gathered
    from full-dof vectors). Builds the filters' weight matrices on the host (the path
    needs them anyway)."""
    n_cells = model.mesh.n_cells
    nd = int(np.shape(model.ke)[-1])
    k = model.physics.dofs_per_node
    entries = n_cells * nd * nd  # at most; entries on supported dofs drop out
    nnz = entries // 4  # tet4: ~5 entries per CSR value, hex8: ~3 (a node's 27 neighbours)
    # H, and H^T for a density filter's chain rule
    filter_nnz = sum(f.H.nnz * (1 if f.heuristic else 2)
                     for f in model.filters if hasattr(f, "H"))
    n_cases = len(model.case_names)
    n_dofs = model.n_dofs
    total = (entries * (8 + 4)             # sorted K0 entries and their cells
             + entries * (4 + 8)           # set-up peak: slot keys and the sort's order
             + nnz * (8 + 4 + 8 + 8)       # CSR values, column indices, gather offsets, data + C
             + filter_nnz * (8 + 4)        # filter weights
             + n_cells * (8 * 20 + 8 * 3)  # design fields, optimizer (MMA), cells
             + n_dofs * 8 * (12 + 4 * n_cases)  # CG vectors, states, loads, sensitivity
             + (n_dofs // k) * k * k * 8 * 3   # node blocks and their inverses
             + integrand_bytes(model, n_dofs - np.unique(model.fixed).size, n_dofs))
    if model.solver.name == "amg":  # float32 P, P^T, coarse levels and the products' output
        total += nnz * 4 * (4 + 8)
    return int(MEMORY_MARGIN * total)


class MeshDevicePath(DevicePath):
    """The design chain of ``model`` (a mesh from a file) with fields on ``xp``: states
    on the free dofs, the operator assembled into the fixed pattern and solved by
    block-Jacobi PCG or AMG-PCG, the adjoint term from the physics' generated design-sensitivity
    kernel.

    Args:
        model: a built model that :func:`unsupported` accepts, with a ``pcg`` or ``amg``
            solver.
        xp: the array module of the fields (cupy, or numpy in tests).
    """

    def __init__(self, model: Any, xp: Any):
        mesh = model.mesh
        free_mask = np.ones(model.n_dofs, dtype=bool)
        free_mask[model.fixed] = False
        free = np.flatnonzero(free_mask)
        self.n_dofs = model.n_dofs
        self.free_host = free
        self.free = xp.asarray(free)
        pattern = FixedPatternAssembler(model.cell_dofs, model.n_dofs, free,
                                        model.physics.dofs_per_node)
        self.assembly = GatherAssembler(pattern, np.asarray(model.ke, dtype=np.float64), xp)
        opts = model.solver.options
        if model.solver.name == "amg":
            modes = np.asarray(model.physics.rigid_modes(), dtype=np.float64)
            self.solver = DeviceAMGPCG(pattern.indptr, pattern.indices,
                                       modes[free] if modes.ndim == 2 and modes.shape[1]
                                       else None, xp, opts.rtol, opts.max_iter,
                                       opts.max_coarse, opts.cycle)
        else:
            self.solver = NodeBlockPCG(pattern.indptr, pattern.indices, free,
                                       model.physics.dofs_per_node, xp, opts.rtol,
                                       opts.max_iter)
        self.kernel = model.physics.element_kernel()
        self.points = xp.asarray(mesh.points, dtype=xp.float64)
        self.cells = xp.asarray(mesh.cells, dtype=xp.int64)
        super().__init__(model, xp, model.loads[:, free])

    def _to_states(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)[self.free_host]

    def _set_operator(self, scale: Any) -> None:
        self.solver.update(self.assembly.assemble_data(scale))

    def _solve(self, rhs: Any, x0: Any) -> tuple[Any, int]:
        self.solver.rtol = self.model.solver.options.rtol  # as the model's options say now
        x = self.solver.solve(rhs, x0=x0)
        return x, self.solver.last.iterations

    def _full(self, v: Any) -> Any:
        """(n, n_free) rows as (n, n_dofs), zero on the supported dofs."""
        full = self.xp.zeros((v.shape[0], self.n_dofs), dtype=v.dtype)
        full[:, self.free] = v
        return full

    def _adjoint_term(self, u: Any, mu: Any, beta: np.ndarray, a: np.ndarray, scale: Any,
                      dm: Any) -> Any:
        """dm_e sum_c lambda_c,e^T (dK_e/dm) u_c,e by the generated kernel (or its twin)."""
        xp = self.xp
        lam = xp.asarray(beta)[:, None] * u
        if mu is not None:
            lam = lam + xp.asarray(a) @ mu
        return generated.sensitivity(self.kernel, self.points, self.cells, scale, dm,
                                     self._full(lam), self._full(u))

    def _cell_dofs(self) -> Any:
        if not hasattr(self, "_dofs"):
            self._dofs = self.xp.asarray(self.model.cell_dofs)
        return self._dofs

    def _cell_states(self, u: Any, cells: Any) -> Any:
        return self._full(u)[:, self._cell_dofs()[cells]]

    def _from_cells(self, de: Any, cells: Any) -> Any:
        return self._scatter(self._cell_dofs()[cells], de, self.n_dofs)[:, self.free]

    def host_states(self) -> np.ndarray:
        return to_host(self._full(self.u))
