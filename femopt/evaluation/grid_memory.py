"""The GPU memory of a design iteration on the grid path, as a sum of named arrays.

Each array is counted from the code that allocates it (docs/architecture.md, "Memory of a
design iteration on the grid path", has the table) and belongs to one phase:

- ``held``: alive for the whole iteration (states, loads, the multigrid hierarchy, the
  design chain's per-cell arrays, the optimizer's design and bounds);
- ``solve``: the Krylov vectors of one solve (float64 CG, or the mixed solve's float32
  CG: its float64 defect is not alive with them);
- ``update``: the transients of a new design's hierarchy (the Lanczos estimate of the
  fine level, the diagonal before its inverse, level 2's Galerkin cell matrices by
  chunks of cell layers and level 3's made from them);
- ``gradient``: dm/drho, the functions' adjoint and partial terms and their chain rule
  through the filters, one row at a time;
- ``optimizer``: the objective and constraint gradients the optimizer sees (the chain
  rule's arrays, scaled in place), a heuristic filter's rewrite of df, the optimizer's
  update (OC's trial design, MMA's subproblem).

Within a phase the arrays are summed: the most of them alive at once (a rank's slab
keeps the earlier count of its gradient, every array of it at once, in ``gradient``).
The peak is ``held`` plus the largest of the other phases: they follow one another.
Coarse levels are counted as 1/7 of their fine counterpart (1/8 + 1/64 + ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from femopt.solvers.galerkin import CHUNK_BYTES, layer_chunks

F64, F32, I32, BOOL = 8, 4, 4, 1
BF16 = 2  # bfloat16: the smoothers' 1 / diagonal of a float32 V-cycle
COARSE = 1.0 / 7.0  # levels 1, 2, ... of a vector: 1/8 + 1/64 + ... of level 0
# MMA's per-variable float64 arrays at the Newton step's peak (optimizers/mma.py): the
# history and asymptotes (4), the subproblem's coefficients (6), the interior point, its
# direction and trial point (9), the residual's and the Newton system's pieces (about 11)
MMA_ARRAYS = 30
# beside df and dg: OC's trial design (one array for every trial; w of the linear
# constraint is held), or before it a heuristic filter's rewrite of df (its result and
# one temporary)
OC_ARRAYS = 2
SLAB_OC_ARRAYS = 2  # a slab's count: the trial design, the accepted one
PHASES = ("held", "solve", "update", "gradient", "optimizer")


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
                     slab: bool = False, layer_cells: int = 0, first_csr: int | None = 3,
                     fine_residual: bool = False) -> list[Array]:
    """The arrays of one design iteration of a grid with ``n_cells`` cells and
    ``n_dofs`` dofs (``k`` per node, ``dim`` axes), ``n_cases`` load cases, the Krylov
    precision ``krylov`` ("mixed" or "double"), ``n_filters`` density filters, OC (or
    MMA) and ``n_coarse`` dofs on the coarsest level (its dense inverse on the
    GPU). ``fixed_design``: some design variables are held fixed (passive cells), so the
    bounds and the start are arrays, not constants. ``slab``: a rank's slab of the
    distributed path, whose level 1 is applied cell-wise from its children's scale
    factors (held); one GPU's level 1 is applied by products and needs them only for
    its diagonal (the hierarchy update). ``layer_cells``: the cells
    of one layer of the grid's slowest axis, which size the first assembled level's
    chunks of Galerkin cell matrices (0: a chunk of
    :data:`~femopt.solvers.galerkin.CHUNK_BYTES`). ``first_csr``: one GPU's first coarse
    level in CSR, the one above it applied by Galerkin products where it is 2 or more
    (hybrid: 3, level 1 rediscretized and level 2 by products; galerkin: 2, or 1 without
    products; None: none but the coarsest, every level rediscretized); a slab's is 2.
    ``fine_residual``: one GPU's fine level holds its residual vector (galerkin's level 1
    products take it as work space, or springs keep the fine level from fused steps)."""
    if krylov not in ("mixed", "double"):
        raise ValueError(f"unknown Krylov precision {krylov!r}")
    nd = 2**dim * k  # dofs of a cell
    row = 3**dim * k  # entries of an assembled row
    n2, c2 = n_dofs // 4**dim, n_cells // 4**dim  # level 2 (two coarsenings)
    if slab:
        first_csr = 2
    deep = 64 if first_csr is None else first_csr  # beyond any hierarchy
    n_csr, c_csr = n_dofs // 2**(dim * deep), n_cells // 2**(dim * deep)
    product = first_csr is not None and first_csr >= 2  # a Galerkin product level above
    fine_r = slab or fine_residual
    levels = 1.0 + COARSE
    mixed = krylov == "mixed"
    out = [
        Array("states u", "held", F64 * n_dofs * n_cases),
        Array("loads f (their nonzeros: a face or a line, not counted)", "held", 0),
        # one GPU's fine level forms its smoothers' residuals in its applies (fused
        # steps: StructuredOperator.smooth) but where it lends r to level 1's products or
        # carries springs; a slab's holds r too
        Array("V-cycle d (level 0; and r where it has no fused steps)", "held",
              (2 if fine_r else 1) * F32 * n_dofs),
        Array("V-cycle b, x (level 0; the CG's own vectors when mixed)", "held",
              0 if mixed else 2 * F32 * n_dofs),
        Array("V-cycle b, x, r, d (coarse levels)", "held", int(4 * F32 * n_dofs * COARSE)),
        # bfloat16 where the V-cycle is float32, as on one GPU with either Krylov
        # precision (smoothers.InverseDiagonal)
        Array("smoothers' 1 / diagonal", "held", int(BF16 * n_dofs * levels)),
        # one GPU: one bool mask a level, read by its operators as bytes; a slab's levels
        # hold fixed and free, and its fine level both again for the whole slab
        Array("free masks (a slab's fixed ones too)", "held",
              int((4 if slab else 1) * BOOL * n_dofs * levels)),
        Array("scale factors, float64 (CG's operator)", "held", F64 * n_cells),
        Array("scale factors, float32 (V-cycle; level 1's, rediscretized, an eighth more)",
              "held", int(F32 * n_cells * 9 / 8)),
        # the columns are computed by the device's product (structured_csr.py): the
        # values, and per dof the row offsets and the diagonal's slots
        Array(f"coarse CSR values, row offsets, diagonal slots (levels {deep} and below)"
              if first_csr is not None else "coarse CSR values (the coarsest level's)",
              "held", int((F32 * row + 2 * I32) * n_csr * levels)),
        Array("design x (with passive cells: x0 and the bounds too)", "held",
              (4 if fixed_design else 1) * F64 * n_cells),
        # a grid filter keeps 1 / Hs on its proxy grid alone: a table of at most
        # (2R + 1)^dim values (R the reach in cells), looked up per cell
        Array("filters' 1 / Hs (a table of at most (2R + 1)^dim values each)", "held", 0),
        # each filter's input beyond x, and rho: the last filter's output itself (no
        # copy), or a copy of x without a filter (EvaluationPath._through)
        Array("filtered designs, rho", "held", F64 * n_cells * max(n_filters, 1)),
        # a grid's volume weights are one number at stride 0 (DevicePath._to_cells); the
        # volume's dot on a GPU makes them an array for that product alone (gradient)
        Array("volume weights (one number: a grid's cells are alike)", "held", 0),
        # OC's w of the linear constraint is its gradient dg (optimizer phase), or one
        # number (EvaluationPath.linear_constraint): nothing held
        Array("coarsest level's inverse (dense float64)", "held",
              F64 * n_coarse * n_coarse),
    ]
    if mixed:
        # its steps go into the float64 state; z takes q's place (Fletcher-Reeves)
        out.append(Array("float32 CG r, p, q (z in q's place)", "solve", 3 * F32 * n_dofs))
    else:
        out.append(Array("float64 CG x, r, q, z, p and its dense right-hand side",
                         "solve", 6 * F64 * n_dofs))
    out += [
        # the Galerkin product level's diagonal takes them (a slab's level 1 its apply)
        Array(f"level {deep - 1} children's scale factors" if product
              else "children's scale factors (no Galerkin product level)",
              "held" if slab else "update",
              F32 * n_cells // 2**(dim * (deep - 2)) if product else 0),
        # one GPU: z = D~^-1 r formed where it is used (smoothers.estimate_lambda_max), r
        # and p the level's r and d (r new where fused); a slab's runs hold r, z, p and q
        # of every level at once
        Array("Lanczos q, and r where the fine level is fused (p the V-cycle's d; a "
              "slab's r, z, p, q of every level)", "update",
              int(4 * F32 * n_dofs * levels) if slab else
              (1 if fine_r else 2) * F32 * n_dofs),
    ]
    if slab:  # a rank's slab makes its coarse cell matrices whole
        out.append(Array("level 2 Galerkin cell matrices", "update", F32 * c2 * nd * nd))
    else:
        out += [
            Array(f"level {deep} Galerkin cell matrices: one chunk of cell layers, "
                  "and its coarsening's temporaries (half a chunk)", "update",
                  int(1.5 * _galerkin_chunk(c_csr, nd, dim, layer_cells, deep))),
            Array(f"level {deep + 1} Galerkin cell matrices, made from level "
                  f"{deep}'s chunks (the next level's beside its assembly: 1/7 more)",
                  "update", int(F32 * c_csr // 2**dim * nd * nd * 8 / 7)),
        ]
    out.append(Array("coarsest level: its dense matrix and Cholesky factor, then the "
                     "working copies of the solves that make the inverse", "update",
                     2 * F64 * n_coarse * n_coarse))
    update = MMA_ARRAYS if mma else (SLAB_OC_ARRAYS if slab else OC_ARRAYS)
    if slab:
        return out + [
            Array("dm/drho (made after the forward and adjoint solves)", "gradient",
                  F64 * n_cells),
            Array("sensitivity, partial term, chain rule", "gradient", 4 * F64 * n_cells),
            Array("objective and constraint gradients", "gradient", 2 * F64 * n_cells),
            Array("optimizer update", "gradient", update * F64 * n_cells)]
    return out + [
        Array("dm/drho (made after the forward and adjoint solves, let go of before the "
              "chain rule)", "gradient", F64 * n_cells),
        # beside dm: the objective's adjoint term and the constraint's partial term; in
        # the chain rule a row's sum and its filter's output beside the other row's
        Array("the functions' adjoint and partial terms, one chain-rule row", "gradient",
              2 * F64 * n_cells),
        Array("objective and constraint gradients df, dg (scaled in place)", "optimizer",
              2 * F64 * n_cells),
        Array("optimizer update (OC: its trial design, or before it a heuristic filter's "
              "rewrite of df and a temporary)", "optimizer", update * F64 * n_cells),
    ]


def _galerkin_chunk(cells: int, nd: int, dim: int, layer_cells: int, level: int = 2) -> int:
    """Bytes of the largest chunk of ``level``'s float32 cell matrices (``cells`` cells;
    ``layer_cells`` the fine grid's layer, 0: unknown, a chunk of CHUNK_BYTES)."""
    whole = F32 * cells * nd * nd
    if not layer_cells:
        return min(whole, CHUNK_BYTES)
    layer = max(layer_cells // 2 ** (level * (dim - 1)), 1)
    per_layer = F32 * layer * nd * nd
    chunks = layer_chunks(max(cells // layer, 1), per_layer, even=True)
    return min(whole, max(b - a for a, b in chunks) * per_layer)


def peak_bytes(arrays: list[Array]) -> int:
    """``held`` plus the largest other phase."""
    by = {p: sum(a.bytes for a in arrays if a.phase == p) for p in PHASES}
    return by["held"] + max(by[p] for p in PHASES[1:])


def table(arrays: list[Array], n_cells: int) -> str:
    """The arrays as a Markdown table in bytes per cell (benchmarks, docs)."""
    lines = ["| array | phase | B/cell |", "| --- | --- | --- |"]
    lines += [f"| {a.name} | {a.phase} | {a.bytes / n_cells:.1f} |" for a in arrays if a.bytes]
    lines.append(f"| peak (held + largest phase) | | {peak_bytes(arrays) / n_cells:.1f} |")
    return "\n".join(lines)
