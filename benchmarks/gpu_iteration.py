"""One full design iteration of the 3D cantilever on the GPU, and a side-by-side solve.

Design iteration (:class:`femopt.design.grid_iteration.GridComplianceLoop`): density
filter, SIMP, MG-PCG to a relative residual of 1e-5 warm-started from the previous state,
compliance sensitivity, filter chain rule, OC update; everything on the GPU. The first
iteration (cold: kernel compilation, hierarchy set-up, no warm start) is reported apart;
the median is over the following ones. Peak memory is the CuPy pool's high-water mark.

Side by side, at a size where all three finish: one solve of the same system (truss
design, rtol 1e-5, zero initial guess) with femopt's GPU multigrid, femopt's CPU
multigrid, and CuPy's own CG with a Jacobi preconditioner on the assembled matrix.

    python benchmarks/gpu_iteration.py [--sizes 128x64x64,256x128x128,512x256x256]
        [--iterations 4] [--largest 768x384x384,640x320x320] [--side-by-side 64x32x32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date

import numpy as np


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("x"))


def pool_peak() -> int:
    import cupy

    return cupy.get_default_memory_pool().total_bytes()


def release() -> None:
    import cupy

    cupy.get_default_memory_pool().free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()


def design_iterations(shape, iterations, options):
    import cupy

    from femopt.design.grid_iteration import GridComplianceLoop
    from femopt.mesh.grid_cantilever import grid_cantilever

    release()
    loop = GridComplianceLoop(grid_cantilever(shape, cupy), cupy, solver_options=options)
    first = loop.step(rtol=1e-5, timed=True)
    rest = [loop.step(rtol=1e-5, timed=True) for _ in range(iterations)]
    peak = pool_peak()
    levels = len(loop.solver.levels)
    del loop
    release()
    return first, rest, peak, levels


def print_iteration_table(sizes, iterations, options, label) -> float:
    """Print the table; return the peak bytes per cell of the largest grid that ran."""
    per_cell = 0.0
    print(f"\n## one design iteration ({label}), median of {iterations} warm iterations")
    print("| grid | cells | dofs | levels | first (s) | median (s) | CG its (median) "
          "| setup / solve / rest (s) | peak GPU memory (GB) | compliance |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in sizes:
        try:
            first, rest, peak, levels = design_iterations(shape, iterations, options)
        except Exception as exc:
            print(f"| {'x'.join(map(str, shape))} | | | | failed: {type(exc).__name__}: "
                  f"{str(exc)[:160]} | | | | | |", flush=True)
            release()
            continue
        cells = int(np.prod(shape))
        dofs = 3 * int(np.prod([n + 1 for n in shape]))
        med = statistics.median(r.seconds for r in rest)
        its = statistics.median(r.cg_iterations for r in rest)
        ph = {k: statistics.median(r.phases.get(k, 0.0) for r in rest) for k in rest[0].phases}
        other = sum(v for k, v in ph.items() if k not in ("mg_setup", "solve"))
        print(f"| {'x'.join(map(str, shape))} | {cells / 1e6:.1f}M | {dofs / 1e6:.1f}M | "
              f"{levels} | {first.seconds:.2f} | {med:.3f} | {its:g} | "
              f"{ph.get('mg_setup', 0):.3f} / {ph.get('solve', 0):.3f} / {other:.3f} | "
              f"{peak / 1e9:.1f} | {rest[-1].compliance:.6g} |", flush=True)
        per_cell = peak / cells
    return per_cell


def largest(candidates, options, bytes_per_cell):
    """Try the largest candidate whose estimated footprint fits the free memory."""
    import cupy

    release()
    free, total = cupy.cuda.runtime.memGetInfo()
    print("\n## largest cantilever that fits (one cold and one warm iteration)")
    print(f"estimate: {bytes_per_cell:.0f} bytes per cell (the peak of the largest timed "
          f"grid); free memory {free / 1e9:.1f} of {total / 1e9:.1f} GB")
    print("| grid | cells | estimate (GB) | result | peak GPU memory (GB) | warm iteration (s) "
          "| CG its |")
    print("|---|---|---|---|---|---|---|")
    for shape in sorted(candidates, key=lambda s: -int(np.prod(s))):
        cells = int(np.prod(shape))
        est = bytes_per_cell * cells
        row = f"| {'x'.join(map(str, shape))} | {cells / 1e6:.1f}M | {est / 1e9:.1f} |"
        if est > 0.95 * free:
            print(f"{row} not tried: the estimate exceeds the free memory | | | |", flush=True)
            continue
        try:
            first, rest, peak, _ = design_iterations(shape, 1, options)
        except Exception as exc:
            print(f"{row} {type(exc).__name__}: {str(exc)[:120]} | | | |", flush=True)
            release()
            continue
        print(f"{row} fits | {peak / 1e9:.1f} | {rest[0].seconds:.2f} | "
              f"{rest[0].cg_iterations} |", flush=True)
        return


def side_by_side(shape):
    import cupy
    import cupyx.scipy.sparse as csp
    import cupyx.scipy.sparse.linalg as cspla

    from femopt.assembly.sparse import FixedPatternAssembler
    from femopt.mesh.grid_cantilever import grid_cantilever, truss_design
    from femopt.solvers.multigrid import MultigridOptions, MultigridSolver

    case = grid_cantilever(shape)
    lay = case.layout
    scale = 1e-9 + truss_design(shape) ** 3
    print(f"\n## side by side: one solve, {'x'.join(map(str, shape))} cantilever "
          f"({lay.n_dofs / 1e6:.2f}M dofs), truss design (contrast 1e-9), rtol 1e-5 from zero")
    print("| solver | set-up (s) | solve (s) | iterations |")
    print("|---|---|---|---|")
    rows = []
    for label, xp in (("femopt MG-PCG, GPU", cupy), ("femopt MG-PCG, CPU", np)):
        mg = MultigridSolver(MultigridOptions(rtol=1e-5), lay)
        fixed = xp.asarray(case.fixed)
        s = xp.asarray(scale)
        for rep in range(2):  # the second run is timed: compilation and caches warm
            t0 = time.perf_counter()
            mg.update_grid_operator(s, case.ke, fixed)
            if xp is cupy:
                cupy.cuda.Device().synchronize()
            t1 = time.perf_counter()
            mg.solve_grid(xp.asarray(case.load), rtol=1e-5)
            if xp is cupy:
                cupy.cuda.Device().synchronize()
            t2 = time.perf_counter()
        rows.append((label, t1 - t0, t2 - t1, mg.last.iterations))
    # CuPy CG + Jacobi on the assembled free-dof matrix
    t0 = time.perf_counter()
    fixed = lay.to_dofs(case.fixed)
    asm = FixedPatternAssembler(lay.cell_dofs(), lay.n_dofs, np.flatnonzero(~fixed))
    k = asm.assemble(scale, case.ke)
    kg = csp.csr_matrix(k)
    inv_d = cupy.asarray(1.0 / k.diagonal())
    jac = cspla.LinearOperator(k.shape, matvec=lambda v: inv_d * v)
    f = cupy.asarray(asm.restrict(lay.to_dofs(case.load)))
    cupy.cuda.Device().synchronize()
    t1 = time.perf_counter()
    count = [0]

    def cb(_):
        count[0] += 1

    kw = {"tol": 1e-5} if _cg_has_tol() else {"rtol": 1e-5}
    cspla.cg(kg, f, M=jac, maxiter=200_000, callback=cb, **kw)
    cupy.cuda.Device().synchronize()
    t2 = time.perf_counter()
    rows.append(("CuPy CG + Jacobi, assembled, GPU", t1 - t0, t2 - t1, count[0]))
    for label, setup, solve, its in rows:
        print(f"| {label} | {setup:.3f} | {solve:.3f} | {its} |", flush=True)


def _cg_has_tol() -> bool:
    import inspect

    import cupyx.scipy.sparse.linalg as cspla

    return "tol" in inspect.signature(cspla.cg).parameters


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128x64x64,256x128x128,512x256x256")
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--largest", default="768x384x384,640x320x320")
    ap.add_argument("--side-by-side", default="64x32x32")
    ap.add_argument("--hybrid-at", default="256x128x128,512x256x256",
                    help="also time coarse_operator=hybrid at these sizes ('' for none)")
    args = ap.parse_args(argv)
    import cupy

    from femopt.solvers.multigrid import MultigridOptions

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"# 3D cantilever design iterations on {name}, {date.today().isoformat()}")
    sizes = [parse_shape(s) for s in args.sizes.split(",") if s]
    per_cell = print_iteration_table(sizes, args.iterations, MultigridOptions(),
                                     "Galerkin coarse levels")
    if args.hybrid_at:
        print_iteration_table([parse_shape(s) for s in args.hybrid_at.split(",")],
                              args.iterations, MultigridOptions(coarse_operator="hybrid"),
                              "hybrid: rediscretized level 1, Galerkin below")
    if args.side_by_side:
        try:
            side_by_side(parse_shape(args.side_by_side))
        except Exception as exc:
            print(f"side by side failed: {type(exc).__name__}: {exc}")
    if args.largest and per_cell > 0:
        largest([parse_shape(s) for s in args.largest.split(",")], MultigridOptions(),
                per_cell)
    return 0


if __name__ == "__main__":
    sys.exit(main())
