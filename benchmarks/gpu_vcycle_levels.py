"""Where a V-cycle's time goes on the GPU grid path, level by level, and how much of it is
the host issuing kernels: `femopt.api.run` of the 3D cantilever of
``benchmarks/gpu_cli_run.py`` (no ``solver:`` section: the defaults), stopped in its
third design's solve, where the hierarchy is that design's. For each level k, V-cycles
from level k down (random right-hand sides, the solver's own levels) are timed with CUDA
events after a warm-up, and the host's time to issue them without waiting is taken
apart: where the issue time reaches the GPU time, V-cycles started there are bound by
kernel launches, not by the device. Also the fine level's operator apply, its fused
smoothing step and a V-cycle as CG calls it (float64 in and out). A diagnostic, not a
figure of `femopt run`: it reaches the solver by wrapping the private
`MultigridSolver.update_grid_operator` and ends the process (`os._exit`) once measured.
A level's row times V-cycles started there on their own; within a cycle from level 0
the host runs ahead of the GPU, so the coarse levels' launches are hidden there.

    python benchmarks/gpu_vcycle_levels.py [--shape 512x256x256] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_cli_run import problem  # noqa: E402


def gpu_ms(cp: Any, fn: Any, repeats: int) -> tuple[float, float]:
    """(GPU ms per call by CUDA events, host ms per call to issue it) after a warm-up."""
    fn()
    fn()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    t0 = time.perf_counter()
    start.record()
    for _ in range(repeats):
        fn()
    issued = time.perf_counter() - t0
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / repeats, 1e3 * issued / repeats


def measure(solver: Any, repeats: int) -> None:
    import cupy as cp

    from femopt.solvers.multigrid_levels import vcycle

    levels = solver.levels
    rs = cp.random.RandomState(5)
    print("| from level | dofs | operator | V-cycle GPU (ms) | host issue (ms) | issue / GPU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, lev in enumerate(levels):
        n = lev.layout.n_dofs
        b = rs.standard_normal(n, dtype=solver.dtype) * lev.free
        x = cp.zeros(n, dtype=solver.dtype)
        kind = ("coarsest solve" if lev.coarse_solve is not None else
                type(lev.op).__name__ + (" (fused)" if lev.r is None else ""))
        g, h = gpu_ms(cp, lambda: vcycle(levels, k, b, x), repeats)
        print(f"| {k} | {n} | {kind} | {g:.3f} | {h:.3f} | {h / g:.2f} |", flush=True)
        del b, x
    top = levels[0]
    n = top.layout.n_dofs
    u = rs.standard_normal(n, dtype=solver.dtype) * top.free
    y = cp.empty_like(u)
    g, h = gpu_ms(cp, lambda: top.op.apply(u, out=y), repeats)
    print(f"\nfine apply, {solver.dtype.__name__}: {g:.3f} ms GPU, {h:.3f} ms issue; "
          f"u and y alone at {2 * u.nbytes / g / 1e6:.0f} GB/s")
    if top.r is None:
        d = cp.zeros_like(u)
        g, h = gpu_ms(cp, lambda: top.op.smooth(y, u, d, top.smoother.inv_diag, 0.5, 0.5),
                      repeats)
        print(f"fine fused smoothing step: {g:.3f} ms GPU, {h:.3f} ms issue")
    r = cp.asarray(rs.standard_normal(n), dtype=cp.float64) * top.free
    out = cp.empty_like(r)
    g, h = gpu_ms(cp, lambda: solver.precondition(r, out), repeats)
    print(f"one V-cycle as CG calls it (float64 in and out): {g:.3f} ms GPU, {h:.3f} ms "
          f"issue")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="512x256x256")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()

    import femopt.solvers.multigrid as mg
    from femopt.api import run

    shape = tuple(int(s) for s in args.shape.split("x"))
    original = mg.MultigridSolver.update_grid_operator
    designs = [0]
    out = tempfile.mkdtemp()

    def update(self, *a, **kw):
        if designs[0] == 3:  # the third design's hierarchy, built: measure and stop
            measure(self, args.repeats)
            sys.stdout.flush()
            shutil.rmtree(out, ignore_errors=True)
            os._exit(0)  # the run's later designs are not needed
        designs[0] += 1
        return original(self, *a, **kw)

    mg.MultigridSolver.update_grid_operator = update
    print(f"shape {args.shape}, the defaults, V-cycles of the third design's hierarchy\n")
    try:
        run(problem(shape, 6, None, "none"), out, device="gpu")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
