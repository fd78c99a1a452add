"""The design chain of a model on a mesh from a file, with every field on the device.

The unstructured counterpart of :mod:`femopt.evaluation.grid_device`: the design chain,
the functions, the adjoint solves with warm starts and the evaluation are
:class:`~femopt.evaluation.device.DevicePath`'s; this path keeps its states on the free
dofs and supplies the operator, the solve and the adjoint term. One design iteration:

    x -> filters (linear filters' weights as device CSR, pointwise projections) -> rho
      -> K = sum_e m(rho_e) K0_e into the fixed CSR pattern (GatherAssembler: one thread
         per CSR value; the K0_e of full material are computed once, on the device)
      -> node-block Jacobi PCG (NodeBlockPCG: femopt's fused CG kernels, the CSR SpMV
         kernel) or, with ``solver: {type: amg}``, smoothed-aggregation AMG-PCG
         (DeviceAMGPCG: structure once per mesh, values per design on the device),
         warm-started from the previous state
      -> adjoint solves K mu_g = -a_g (same PCG, warm-started) for displacement-type terms
      -> dJ/drho_e = m'(rho_e) sum_c lambda_ce^T K0_e u_ce by the generated
         design-sensitivity kernel of the physics' element kernel
      -> volume (a dot product) -> chain rule through the filters -> OC or MMA.

The set-up runs on the device too: the element matrices from the physics' element kernel
in batches of cells (:mod:`femopt.assembly.element_batches`), the CSR pattern and the
gather map by sorts of row parts (:mod:`femopt.assembly.csr_pattern`), the node blocks of the
preconditioner, and a radius filter's weights by cell hashing
(:mod:`femopt.filters.cell_hash`). The host keeps the mesh (points, cells) and vectors of
one value per cell or dof (design bounds, volumes, loads); ``setup="host"`` builds the
element matrices, the pattern and the filter weights on the host instead (the reference
the tests compare with). Then only scalars reach the host until the results are written.
With ``xp = numpy`` the same code runs on the CPU (the assembly is then a bincount in the
gather's order, the SpMV SciPy's and the sensitivity the generated kernel's NumPy twin),
which is how the CPU tests check it against the CPU path.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from femopt.adjoint import generated
from femopt.assembly.csr_gather import GatherAssembler
from femopt.assembly.csr_pattern import build_pattern, part_entries
from femopt.assembly.element_batches import element_matrices_batched
from femopt.assembly.sparse import FixedPatternAssembler
from femopt.backend import release_cached, to_host
from femopt.backend.rows import RowSource, dof_rows
from femopt.evaluation.device import DevicePath, capability
from femopt.evaluation.device_forms import integrand_bytes
from femopt.evaluation.function_checks import modal_parts
from femopt.solvers.amg import cycle_settings
from femopt.solvers.csr_pcg import NodeBlockPCG
from femopt.solvers.device_amg import DeviceAMGPCG
from femopt.solvers.sa_hierarchy import lanczos_steps

MAX_ITER = 20000  # CG iterations per solve when the GPU replaces the default solver
SETUP = "device"  # where MeshDevicePath builds its element matrices and pattern by default
SORT_PEAK = 8 + 4 + 8 + 8 + 4 + 16  # bytes per entry of a part of the keys while it sorts
GATHER_PEAK = 4 + 8 + 4 + 3 + 4  # bytes per entry while the gather's values are made
GATHER_KEPT = 8 + 4  # bytes per entry the gather keeps: the element matrices' value, cell
AMG_BYTES = 60  # bytes per CSR value of the AMG hierarchy on the device (estimate_parts)
# Over the count, from the bracket's high-water marks on an H100 (2026-12-06,
# benchmarks/bracket_iteration.py --setup device, tet4 elasticity, the `amg` solver, a
# radius filter of 1.5 element sizes; the pool's total counted while set-up blocks are
# held): at 929k tets 4.48 GB against 4.70 counted (+4.9%), at 10.2M tets 51.93 GB
# against 49.72 (-4.3%: the pattern's cached blocks beside the gather's, above the run's
# 46.96). With 4.5% the estimate covers both and is within 10% of them (+9.5%, +0.05%);
# other elements, physics and solvers are counted the same way but not measured.
MEMORY_MARGIN = 1.045
# Node pairs that share a cell, both orders and each node with itself, are about
# 3 V + c C for V nodes and C cells (Euler's formula, V - E + C = 1 in 2D and
# V - E + F - C ~ 0 for a solid, the boundary's share left out): tri3 and tet4 have
# E = V + C (tet4: F = 2 C), so V + 2 E; quad4 adds two diagonals a cell, hex8
# (F = 3 C, E = V + 2 C) two a face and four a cell.
PAIRS_PER_CELL = {"tri3": 2, "tet4": 2, "quad4": 6, "hex8": 24}


def unsupported(model: Any, solver: str | None) -> str | None:
    """Why the GPU path cannot run ``model`` on its mesh from a file (None when it can);
    ``solver`` names a solver the problem asks for that does not run there."""
    why = capability(model)
    if why:
        return why
    if model.has_springs:
        return "the GPU path on a mesh from a file does not take springs"
    eigen = next((part for fn in model.functions() for _, part in modal_parts(fn)), None)
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
    from full-dof vectors), with :data:`MEMORY_MARGIN`: the largest of three phases'
    (:func:`estimate_parts`), the set-up's peak, the filter weights' hashing and the
    run's arrays, as the set-up's temporaries go back to the device after the gather
    and after the filters (:class:`MeshDevicePath`)."""
    parts = estimate_parts(model)
    setup = parts["set-up"] + parts["mesh"]
    # finding the filter weights: the gather's arrays, the operator's and the weights
    hashing = (parts["filter hashing"] + parts["gather"] + parts["operator"]
               + parts["mesh"] + parts["filters"])
    run = sum(parts.values()) - parts["set-up"] - parts["filter hashing"]
    return int(MEMORY_MARGIN * max(setup, hashing, run))


def estimate_parts(model: Any) -> dict[str, int]:
    """The parts of :func:`estimate_bytes` by name (bytes, before the margin): "set-up"
    is the set-up's peak, "filter hashing" the batches of the filter weights' search,
    the others the run's arrays. A radius filter's weights are
    counted from the mean cell volume, not found (the path finds them on the device);
    another linear filter's are built on the host to be counted."""
    n_cells = model.mesh.n_cells
    k = model.physics.dofs_per_node
    nd = model.mesh.cells.shape[1] * k
    entries = n_cells * nd * nd  # at most; entries on supported dofs drop out
    nnz = csr_entries(model.mesh, k)
    # H, and H^T for a density filter's chain rule unless H's rows give it (a radius
    # filter's, SparseDensityFilter's by_rows)
    filter_nnz = sum(f.weights_nnz() * (1 if f.heuristic or getattr(
        f, "symmetric_by_columns", False) else 2)
                     for f in model.filters if hasattr(f, "weights_nnz"))
    # what finding filter weights on the device holds at once (a batch's candidates)
    filter_scratch = max((f.device_scratch_bytes() for f in model.filters
                          if hasattr(f, "device_scratch_bytes")), default=0)
    n_cases = len(model.case_names)
    n_dofs = model.n_dofs
    n_free = model.n_free
    wide = 0 if entries < 2**31 else 4  # int64 flat positions from 2^31 entries
    parts = {
        # The set-up's peak (csr_pattern.build_pattern, then GatherAssembler.on_device):
        # the sorted positions (4 B per entry) with one part of the keys sorting
        # (SORT_PEAK per entry of the part: keys, positions, the order, the sorted keys
        # and positions, the sort's scratch), or after the sort GATHER_PEAK per entry
        # (the positions, the gathered entries and their cells, a batch's mask and its
        # two comparisons, the element matrices of a batch of cells and the indices of
        # its entries), of which the entries and cells stay for the run ("gather");
        # beside it the pattern's columns and gather offsets (12 B per CSR value).
        "set-up": max(entries * (4 + wide) + part_entries(entries) * (SORT_PEAK + 2 * wide),
                      entries * (GATHER_PEAK + wide)) + nnz * 12,
        "gather": entries * GATHER_KEPT,
        # CSR values, column indices, gather offsets, data + C
        "operator": nnz * (8 + 4 + 8 + 8),
        "filters": filter_nnz * (8 + 4),  # the weights
        "filter hashing": filter_scratch,  # finding them (given back before the run)
        # the mesh's cells (int64) and points, the free dofs and the set-up's map to them
        "mesh": model.mesh.cells.size * 8 + model.mesh.points.size * 8 + n_dofs * 8 * 2,
        "cells": n_cells * 8 * 20,  # design fields, optimizer (MMA)
        "dofs": n_dofs * 8 * (12 + 4 * n_cases),  # CG vectors, states, loads, sensitivity
        "integrands": integrand_bytes(model, n_free, n_dofs),
    }
    if model.solver.name == "amg":
        # the fixed-pattern Galerkin products' patterns (one device copy each, shared:
        # fixed_spgemm.device_index), maps and float32 values (A T, P, P^T, A P, coarse
        # levels), the finest level's float32 values: 51 to 55 bytes per CSR value
        # counted on the bracket at 100k and 1M tets (FixedGalerkin.nbytes, each array
        # once), and the levels' old values while the new ones are made; the Lanczos
        # basis of the finest level; the coarsest level (at most max_coarse rows):
        # dense, symmetrized, its factor
        parts["amg"] = (nnz * AMG_BYTES + n_free * lanczos_steps(n_free) * 4
                        + 3 * 8 * int(model.solver.options.max_coarse) ** 2)
    else:
        parts["node blocks"] = (n_dofs // k) * k * k * 8 * 3  # blocks and their inverses
    return parts


def csr_entries(mesh: Any, k: int) -> int:
    """About the number of values of the operator's CSR pattern on a mesh from a file
    with ``k`` dofs a node (:data:`PAIRS_PER_CELL`): low by the boundary's share, 2.7%
    and 1.4% on the bracket at 100k and 1M tets (where the supported dofs' rows take
    some of it back), 14% on the 3,650 tets of problems/meshes/bracket_3d.msh."""
    pairs = PAIRS_PER_CELL.get(mesh.cell_type)
    if pairs is None:  # another element: every cell's entries, shared some 4 times
        return mesh.n_cells * (mesh.cells.shape[1] * k) ** 2 // 4
    return (3 * mesh.points.shape[0] + pairs * mesh.n_cells) * k * k


class _Clock:
    """Seconds of the set-up's steps (the device synchronized at each lap), for the
    benchmark: ``seconds`` by step name, a step's laps added up."""

    def __init__(self, xp: Any):
        self.xp, self.seconds = xp, {}
        self._t = time.perf_counter()

    def lap(self, step: str) -> None:
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()
        t = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + t - self._t
        self._t = t


class MeshDevicePath(DevicePath):
    """The design chain of ``model`` (a mesh from a file) with fields on ``xp``: states
    on the free dofs, the operator assembled into the fixed pattern and solved by
    block-Jacobi PCG or AMG-PCG, the adjoint term from the physics' generated design-sensitivity
    kernel.

    Args:
        model: a built model that :func:`unsupported` accepts, with a ``pcg`` or ``amg``
            solver.
        xp: the array module of the fields (cupy, or numpy in tests).
        setup: ``device`` (the element matrices, the pattern and the gather map built on
            ``xp``: :mod:`femopt.assembly.element_batches`,
            :mod:`femopt.assembly.csr_pattern`; a radius filter's weights by cell hashing)
            or ``host`` (the model's element matrices, a ``FixedPatternAssembler`` and the
            filters' KD-tree weights; the reference the tests compare with). None:
            :data:`SETUP`.
    """

    def __init__(self, model: Any, xp: Any, setup: str | None = None):
        setup = setup or SETUP
        if setup not in ("device", "host"):
            raise ValueError(f"setup must be 'device' or 'host', got {setup!r}")
        mesh = model.mesh
        k = model.physics.dofs_per_node
        free_mask = np.ones(model.n_dofs, dtype=bool)
        free_mask[model.fixed] = False
        free = np.flatnonzero(free_mask)
        self.n_dofs = model.n_dofs
        self.free_host = free
        self.free = xp.asarray(free)
        self.kernel = model.physics.element_kernel()
        self.points = xp.asarray(mesh.points, dtype=xp.float64)
        self.cells = xp.asarray(mesh.cells, dtype=xp.int64)
        clock = _Clock(xp)
        if setup == "device":  # nothing proportional to the cells stays on the host
            pattern = build_pattern(self.cells, k, self.free, model.n_dofs, xp)
            indptr, indices = pattern.indptr, pattern.indices
            clock.lap("pattern")
            # the gather's values, the element matrices made a batch of cells at a time
            self.assembly = GatherAssembler.on_device(
                pattern, lambda a, b: element_matrices_batched(
                    self.kernel, self.points, self.cells[a:b], xp))
            del pattern
            release_cached(xp)  # the sort's and the batches' blocks, before the filters
            clock.lap("element matrices")
        else:  # the host's element matrices and pattern (the reference the tests compare)
            ke = np.asarray(model.ke, dtype=np.float64)
            clock.lap("element matrices")
            host = FixedPatternAssembler(model.cell_dofs, model.n_dofs, free,
                                         model.physics.dofs_per_node)
            indptr, indices = host.indptr, host.indices
            self.assembly = GatherAssembler(host, ke, xp)
            clock.lap("pattern")
        opts = model.solver.options
        if model.solver.name == "amg":
            modes = np.asarray(model.physics.rigid_modes(), dtype=np.float64)
            degree, cycle = cycle_settings(opts, "gpu")
            self.solver = DeviceAMGPCG(indptr, indices,
                                       modes[free] if modes.ndim == 2 and modes.shape[1]
                                       else None, xp, opts.rtol, opts.max_iter,
                                       opts.max_coarse, cycle, degree)
        else:
            self.solver = NodeBlockPCG(indptr, indices, self.free, k, xp, opts.rtol,
                                       opts.max_iter)
        clock.lap("solver")
        if setup == "host":  # the KD-tree's weights, uploaded (a twin reuses built weights)
            for f in model.filters:
                if hasattr(f, "weights_nnz"):
                    f.H  # noqa: B018
        stages = [f.device_twin(xp) for f in model.filters]
        clock.lap("filters")
        super().__init__(model, xp, model.loads[:, free], stages)
        clock.lap("functions")
        release_cached(xp)  # the filter hashing's batches too
        self.setup_seconds = clock.seconds

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
        """(n_cells, nd) dofs of every cell, made on the device from the cells."""
        if not hasattr(self, "_dofs"):
            xp, k = self.xp, self.model.physics.dofs_per_node
            self._dofs = (self.cells[:, :, None] * k
                          + xp.arange(k, dtype=xp.int64)).reshape(self.cells.shape[0], -1)
        return self._dofs

    def _cell_states(self, u: Any, cells: Any) -> Any:
        return self._full(u)[:, self._cell_dofs()[cells]]

    def _from_cells(self, de: Any, cells: Any) -> Any:
        return self._scatter(self._cell_dofs()[cells], de, self.n_dofs)[:, self.free]

    def host_states(self) -> np.ndarray:
        return to_host(self._full(self.u))

    def state_rows(self) -> list[RowSource]:
        k = self.model.physics.dofs_per_node
        return [dof_rows(u, k) for u in self._full(self.u)]
