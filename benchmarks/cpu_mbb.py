"""CPU time per design iteration: femopt against a straight NumPy/SciPy transcription of
the 88-line code, on the MBB beam at three sizes, side by side in one run.

    python benchmarks/cpu_mbb.py [--iterations N] [--sizes 60x20,150x50,300x100]

Both run the same problem (volume 0.5, penalty 3, sensitivity filter radius 1.5 elements,
OC) for the same fixed number of iterations; the time is the loop's, without setup.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from top88_reference import top88  # noqa: E402

from femopt.plugins.manager import get_registry  # noqa: E402
from femopt.problem.load import parse_problem  # noqa: E402
from femopt.evaluation.model import Model  # noqa: E402

PROBLEM = """\
name: mbb_{nx}x{ny}
mesh: {{type: structured, shape: [{nx}, {ny}], size: [{nx}.0, {ny}.0]}}
physics: {{type: linear_elasticity, E: 1.0, nu: 0.3}}
supports:
  - {{region: {{face: x_min}}, dofs: [x]}}
  - {{region: {{point: [{nx}.0, 0.0]}}, dofs: [y]}}
loads:
  - {{region: {{point: [0.0, {ny}.0]}}, force: [0.0, -1.0]}}
filters: [{{type: {filt}, radius: {r}}}]
objective: {{type: compliance}}
constraints: [{{type: volume, max: 0.5}}]
optimizer: {{type: oc, max_iter: {it}, tol: 1.0e-12}}
"""


def femopt_seconds(nx: int, ny: int, iterations: int, rmin: float, filt: str) -> tuple[float, float]:
    reg = get_registry()
    text = PROBLEM.format(nx=nx, ny=ny, it=iterations, r=rmin, filt=filt)
    model = Model(parse_problem(text, "bench.yaml", reg), reg)
    model.start_clock()
    t0 = time.perf_counter()
    model.optimizer.run(model, model.x0.copy(), iterations)
    elapsed = time.perf_counter() - t0
    return elapsed / iterations, model.history[-1].objective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--sizes", default="60x20,150x50,300x100")
    ap.add_argument("--filter", choices=["sensitivity", "density"], default="sensitivity")
    args = ap.parse_args()
    ft = 1 if args.filter == "sensitivity" else 2
    print(f"# MBB beam, {args.filter} filter, {args.iterations} iterations, "
          f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores")
    print("| size | elements | 88-line port s/it | femopt s/it | speed-up | "
          "compliance port | compliance femopt |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        nx, ny = (int(v) for v in size.split("x"))
        # the 88-line code's radius is in elements; femopt's in length (elements of size 1)
        rmin = 1.5
        ref = top88(nx, ny, 0.5, 3.0, rmin, ft, max_loop=args.iterations)
        ours, c = femopt_seconds(nx, ny, args.iterations, rmin, args.filter)
        port = ref["seconds_per_iteration"]
        print(f"| {nx}x{ny} | {nx * ny} | {port:.4f} | {ours:.4f} | {port / ours:.1f}x | "
              f"{ref['compliance'][-1]:.4f} | {c:.4f} |", flush=True)


if __name__ == "__main__":
    main()
