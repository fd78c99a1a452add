"""Cost of the adjoint on the GPU path, relative to the forward solve whose multigrid
hierarchy it reuses.

    python benchmarks/gpu_adjoint_cost.py [--sizes 128x64x64,256x128x128] [--rtol 1e-8]
        [--warmup 5] [--iterations 5] [--numpy]

A 3D cantilever (clamped at x = 0, a line load along the bottom edge of the free end, a
solid end plate one cell thick) whose objective is the mean vertical displacement of the
free end's top edge: not self-adjoint, so every design iteration needs one adjoint solve
K mu = -a. The end plate keeps the measured edge attached to the part: with the whole
free face measured and no plate, OC leaves parts of the face hanging in void, and both
solves need 5 to 20 times more CG iterations after a few design steps (measured at
48x24x24: 64 instead of 12-21 by iteration 8). The model runs
on the GPU path (``femopt.evaluation.grid_device``: density filter of radius 1.5, SIMP p = 3,
volume 0.3, OC) for ``--warmup`` iterations, then ``--iterations`` more are timed with
CUDA events around

- forward: the multigrid operator update for the design (coarse operators, smoothers'
  eigenvalue estimates) and the MG-PCG solve, warm-started from the last state;
- adjoint: the MG-PCG solve of K mu = -a with the same hierarchy (K^T = K), to the same
  tolerance, warm-started from the last mu, plus the sensitivity pass over cells
  (``grid_sensitivity_cases``; also shown alone).

The table gives the medians and the ratio (forward + adjoint) / forward (goal <= 2.1 with
an iterative solver reusing its preconditioner, docs/benchmarks.md). ``--numpy`` runs the
same path with NumPy arrays and wall-clock timers (a smoke test on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date

import numpy as np
import yaml

PROBLEM = {
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "x_min"}}],
    "design": {"interpolation": {"type": "simp", "penalty": 3.0, "min": 1.0e-9}},
    "filters": [{"type": "density", "radius": 1.5}],
    "constraints": [{"type": "volume", "max": 0.3}],
    "optimizer": {"type": "oc"},
}


def build(shape: tuple[int, ...], rtol: float, xp):
    from femopt.plugins.manager import get_registry
    from femopt.problem.load import parse_problem
    from femopt.evaluation.model import Model

    nx, ny, nz = (float(n) for n in shape)
    data = {
        "name": f"cantilever_{'x'.join(map(str, shape))}",
        "mesh": {"type": "structured", "shape": list(shape), "size": [nx, ny, nz]},
        **PROBLEM,
        "design": {**PROBLEM["design"], "passive": [
            {"region": {"box": {"min": [nx - 1.0, 0.0, 0.0], "max": [nx, ny, nz]}},
             "value": "solid"}]},
        "loads": [{"region": {"box": {"min": [nx, 0.0, 0.0], "max": [nx, ny, 0.0]}},
                   "force": [0.0, 0.0, -1.0], "distribute": "total"}],
        "objective": {"type": "displacement",
                      "region": {"box": {"min": [nx, 0.0, nz], "max": [nx, ny, nz]}},
                      "direction": [0.0, 0.0, -1.0]},
        "solver": {"type": "multigrid", "rtol": rtol},
    }
    registry = get_registry()
    return Model(parse_problem(yaml.safe_dump(data), "bench.yaml", registry), registry,
                 array_module=xp)


class Timer:
    """Marks on the GPU's stream (CUDA events) or the host's clock (NumPy)."""

    def __init__(self, xp):
        self.gpu = xp is not np

    def mark(self):
        if not self.gpu:
            return time.perf_counter()
        import cupy

        e = cupy.cuda.Event()
        e.record()
        return e

    def seconds(self, a, b) -> float:
        if not self.gpu:
            return b - a
        import cupy

        b.synchronize()
        return cupy.cuda.get_elapsed_time(a, b) / 1e3


def iteration(model, x, it: int, timer: Timer) -> tuple[object, dict]:
    """One design iteration of the model's GPU path with the phases timed."""
    path = model.path
    rho, inputs = path.physical(x)
    t0 = timer.mark()
    scale, dm = path.analyse(rho)
    t1 = timer.mark()
    path.solve_adjoints()
    t2 = timer.mark()
    values, terms = path.function_terms(rho, scale, dm)
    t3 = timer.mark()
    grads = [path.chain(pr + adj, inputs) for pr, adj in terms]
    ev = path.evaluation(x, values, grads)
    x = model.optimizer.update(model, x, ev, it)
    its = path.cg_iterations
    return x, {"forward": timer.seconds(t0, t1), "adjoint_solve": timer.seconds(t1, t2),
               "sensitivity": timer.seconds(t2, t3), "cg_forward": its["forward"][0],
               "cg_adjoint": (its["adjoint"] or [0])[0], "objective": values[0]}


def run(shape, rtol, warmup, iterations, xp) -> dict:
    model = build(shape, rtol, xp)
    model.optimizer.check(model)
    timer = Timer(xp)
    x = model.x0.copy()
    first = None
    for it in range(1, warmup + 1):
        x, t = iteration(model, x, it, timer)
        first = first or t
    rows = []
    for it in range(warmup + 1, warmup + iterations + 1):
        x, t = iteration(model, x, it, timer)
        rows.append(t)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["first"] = first
    med["levels"] = len(model.solver.levels)
    med["dofs"] = model.path.layout.n_dofs
    med["cells"] = model.n
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128x64x64,256x128x128")
    ap.add_argument("--rtol", default="1e-8",
                    help="CG tolerances of the forward and adjoint solves (comma-separated)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--numpy", action="store_true", help="NumPy arrays (no GPU)")
    args = ap.parse_args(argv)
    if args.numpy:
        xp, name = np, "NumPy (host)"
    else:
        import cupy

        xp = cupy
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"# adjoint cost on the GPU path, {name}, {date.today().isoformat()}")
    print(f"\n3D cantilever, mean displacement of the top edge of a solid end plate; median of {args.iterations} "
          f"OC iterations after {args.warmup}; "
          f"{'wall clock' if args.numpy else 'CUDA events'}\n")
    print("| grid | cells | dofs | levels | rtol | forward (ms) | CG its forward | adjoint "
          "solve (ms) | CG its adjoint | sensitivity (ms) | (forward + adjoint) / forward |"
          " first iteration: CG its forward / adjoint |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for text in args.sizes.split(","):
        shape = tuple(int(v) for v in text.split("x"))
        for rtol in (float(v) for v in args.rtol.split(",")):
            try:
                r = run(shape, rtol, args.warmup, args.iterations, xp)
            except Exception as exc:  # a size that does not fit: say so, go on
                print(f"| {text} | | | | {rtol:g} | failed: {type(exc).__name__}: "
                      f"{str(exc)[:160]} | | | | | | |", flush=True)
                continue
            adjoint = r["adjoint_solve"] + r["sensitivity"]
            ratio = (r["forward"] + adjoint) / r["forward"]
            print(f"| {text} | {r['cells'] / 1e6:.2f}M | {r['dofs'] / 1e6:.2f}M | "
                  f"{r['levels']} | {rtol:g} | {1e3 * r['forward']:.1f} | "
                  f"{r['cg_forward']:g} | {1e3 * r['adjoint_solve']:.1f} | "
                  f"{r['cg_adjoint']:g} | {1e3 * r['sensitivity']:.2f} | **{ratio:.2f}** | "
                  f"{r['first']['cg_forward']} / {r['first']['cg_adjoint']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
