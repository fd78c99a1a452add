"""One solve of the 3D cantilever's system side by side on the GPU and the CPU.

Design iterations are timed through ``femopt run`` itself (benchmarks/gpu_cli_run.py).
Here, at a size where all three finish: one solve of the same system (truss
design, rtol 1e-5, zero initial guess) with femopt's GPU multigrid, femopt's CPU
multigrid, and CuPy's own CG with a Jacobi preconditioner on the assembled matrix.

    python benchmarks/gpu_solvers.py [--side-by-side 64x32x32]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

# the grid cantilever fixture lives with the tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("x"))


def side_by_side(shape):
    import cupy
    import cupyx.scipy.sparse as csp
    import cupyx.scipy.sparse.linalg as cspla

    from femopt.assembly.sparse import FixedPatternAssembler
    from grid_cantilever import grid_cantilever, truss_design
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
    ap.add_argument("--side-by-side", default="64x32x32")
    args = ap.parse_args(argv)
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"# 3D cantilever solves side by side on {name}, {date.today().isoformat()}")
    side_by_side(parse_shape(args.side_by_side))
    return 0


if __name__ == "__main__":
    sys.exit(main())
