"""The GPU memory of a design iteration on the grid path, as a sum of named arrays.

Each array is counted from the code that allocates it (docs/architecture.md, "Memory of a
design iteration on the grid path", has the table) and belongs to one phase:

- ``held``: alive for the whole iteration (states, loads, the multigrid hierarchy, the
  design chain's per-cell arrays, the optimizer's design and bounds);
- ``solve``: the Krylov vectors of one solve (float64 CG, or the mixed solve's float32
  CG: its float64 defect is not alive with them);
- ``update``: the transients of a new design's hierarchy (the Lanczos estimate of the
  fine level, the diagonal before its inverse, the Galerkin cell matrices of level 2);
- ``gradient``: the sensitivity and its chain rule through the filters, and the
  optimizer's update (OC's trial designs, MMA's subproblem).

The peak is ``held`` plus the largest of the other phases: they follow one another.
Coarse levels are counted as 1/7 of their fine counterpart (1/8 + 1/64 + ...).
"""

from __future__ import annotations

from dataclasses import dataclass

F64, F32, I32, BOOL = 8, 4, 4, 1
COARSE = 1.0 / 7.0  # levels 1, 2, ... of a vector: 1/8 + 1/64 + ... of level 0
# MMA's per-variable float64 arrays at the Newton step's peak (optimizers/mma.py): the
# history and asymptotes (4), the subproblem's coefficients (6), the interior point, its
# direction and trial point (9), the residual's and the Newton system's pieces (about 11)
MMA_ARRAYS = 30
OC_ARRAYS = 2  # the trial design, the accepted one (w of the linear constraint is held)
PHASES = ("held", "solve", "update", "gradient")


@dataclass(frozen=True)
class Array:
    name: str
    phase: str
    bytes: int


def coarsest_dofs(layout, coarsest_size: int = 5000, levels: int | None = None) -> int:
    """Dofs of the multigrid's coarsest level of ``layout`` (a ``GridLayout``), coarsened
    as ``MultigridSolver`` coarsens it."""
    from femopt.solvers.multigrid_levels import grid_levels

    return grid_levels(layout, coarsest_size, levels)[-1].n_dofs


def iteration_arrays(n_cells: int, n_dofs: int, dim: int, k: int, n_cases: int = 1,
                     krylov: str = "mixed", n_filters: int = 1, mma: bool = False,
                     n_coarse: int = 0, fixed_design: bool = False,
                     slab: bool = False, constant_w: bool = False) -> list[Array]:
    """The arrays of one design iteration of a grid with ``n_cells`` cells and
    ``n_dofs`` dofs (``k`` per node, ``dim`` axes), ``n_cases`` load cases, the Krylov
    precision ``krylov`` ("mixed" or "double"), ``n_filters`` density filters, OC (or
    MMA) and ``n_coarse`` dofs on the coarsest level (its dense inverse on the
    GPU). ``fixed_design``: some design variables are held fixed (passive cells), so the
    bounds and the start are arrays, not constants. ``slab``: a rank's slab of the
    distributed path, whose level 1 is applied cell-wise from its children's scale
    factors (held); one GPU's level 1 is applied by products and needs them only for
    its diagonal (the hierarchy update). ``constant_w``: OC's w of the linear
    constraint is one number (the volume's weights through no filter that mixes cells,
    no passive cell: ``EvaluationPath.linear_constraint``)."""
    if krylov not in ("mixed", "double"):
        raise ValueError(f"unknown Krylov precision {krylov!r}")
    nd = 2**dim * k  # dofs of a cell
    row = 3**dim * k  # entries of an assembled row
    n2, c2 = n_dofs // 4**dim, n_cells // 4**dim  # level 2 (two coarsenings)
    levels = 1.0 + COARSE
    mixed = krylov == "mixed"
    out = [
        Array("states u", "held", F64 * n_dofs * n_cases),
        Array("loads f (their nonzeros: a face or a line, not counted)", "held", 0),
        Array("V-cycle r, d (level 0)", "held", 2 * F32 * n_dofs),
        Array("V-cycle b, x (level 0; the CG's own vectors when mixed)", "held",
              0 if mixed else 2 * F32 * n_dofs),
        Array("V-cycle b, x, r, d (coarse levels)", "held", int(4 * F32 * n_dofs * COARSE)),
        Array("smoothers' 1 / diagonal", "held", int(F32 * n_dofs * levels)),
        Array("fixed and free masks", "held", int(2 * BOOL * n_dofs * levels)),
        Array("scale factors, float64 (CG's operator)", "held", F64 * n_cells),
        Array("scale factors, float32 (V-cycle)", "held", F32 * n_cells),
        # the columns are computed by the device's product (structured_csr.py): the
        # values, and per dof the row offsets and the diagonal's slots
        Array("coarse CSR values, row offsets, diagonal slots (levels 2 and below)",
              "held", int((F32 * row + 2 * I32) * n2 * levels)),
        Array("design x (with passive cells: x0 and the bounds too)", "held",
              (4 if fixed_design else 1) * F64 * n_cells),
        Array("filters' 1 / Hs", "held", F64 * n_cells * n_filters),
        # each filter's input beyond x, and rho: the last filter's output itself (no
        # copy), or a copy of x without a filter (EvaluationPath._through)
        Array("filtered designs, rho", "held", F64 * n_cells * max(n_filters, 1)),
        # a grid's volume weights are one number at stride 0 (DevicePath._to_cells); the
        # volume's dot on a GPU makes them an array for that product alone (gradient)
        Array("volume weights (one number: a grid's cells are alike)", "held", 0),
        Array("OC's w of the linear constraint (built once, kept: EvaluationPath._linear)",
              "held", 0 if mma or constant_w else F64 * n_cells),
        Array("coarsest level's inverse (dense float64)", "held",
              F64 * n_coarse * n_coarse),
    ]
    if mixed:
        out.append(Array("float32 CG x, r, q, z, p", "solve", 5 * F32 * n_dofs))
    else:
        out.append(Array("float64 CG x, r, q, z, p and its dense right-hand side",
                         "solve", 6 * F64 * n_dofs))
    out += [
        Array("level 1 children's scale factors", "held" if slab else "update",
              F32 * n_cells),
        Array("Lanczos p, q (level 0; r, z are the V-cycle's r, d)", "update",
              2 * F32 * n_dofs),
        Array("level 2 Galerkin cell matrices", "update", F32 * c2 * nd * nd),
        Array("coarsest level: its dense matrix and Cholesky factor, then the working "
              "copies of the solves that make the inverse", "update",
              2 * F64 * n_coarse * n_coarse),
        Array("dm/drho (made after the forward and adjoint solves)", "gradient",
              F64 * n_cells),
        Array("sensitivity, partial term, chain rule", "gradient", 4 * F64 * n_cells),
        Array("objective and constraint gradients", "gradient", 2 * F64 * n_cells),
        Array("optimizer update", "gradient",
              (MMA_ARRAYS if mma else OC_ARRAYS) * F64 * n_cells),
    ]
    return out


def peak_bytes(arrays: list[Array]) -> int:
    """``held`` plus the largest other phase."""
    by = {p: sum(a.bytes for a in arrays if a.phase == p) for p in PHASES}
    return by["held"] + max(by["solve"], by["update"], by["gradient"])


def table(arrays: list[Array], n_cells: int) -> str:
    """The arrays as a Markdown table in bytes per cell (benchmarks, docs)."""
    lines = ["| array | phase | B/cell |", "| --- | --- | --- |"]
    lines += [f"| {a.name} | {a.phase} | {a.bytes / n_cells:.1f} |" for a in arrays if a.bytes]
    lines.append(f"| peak (held + largest phase) | | {peak_bytes(arrays) / n_cells:.1f} |")
    return "\n".join(lines)
