"""Mixed against double Krylov precision on the GPU grid path's NumPy twin: the 3D
cantilever of benchmarks/gpu_cli_run.py after N OC iterations, per solver rtol: the
compliances, their relative difference, the CG iterations of the last forward solve and
the float64 re-solves. The twin runs the GPU path's code with NumPy arrays (float32
arrays where the GPU has them), so the numbers, not the times, carry over to the GPU.

    python benchmarks/grid_precision_twin.py [--shape 24x12x12] [--iterations 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_cli_run import problem  # noqa: E402

from femopt.evaluation.model import Model  # noqa: E402
from femopt.plugins.manager import get_registry  # noqa: E402
from femopt.problem.load import parse_problem  # noqa: E402


def run(shape, iterations: int, krylov: str, rtol: float) -> dict:
    data = problem(shape, iterations, krylov, rtol=rtol)
    data["solver"]["coarsest_size"] = 500
    registry = get_registry()
    model = Model(parse_problem(yaml.safe_dump(data), "problem.yaml", registry), registry,
                  array_module=np)
    t0 = time.perf_counter()
    result = model.optimizer.run(model, model.x0.copy(), iterations)
    values, _, _ = model.final_analysis(result.x)
    return {"objective": values[0], "seconds": time.perf_counter() - t0,
            "cg": model.solver.last.iterations, "fallbacks": model.solver.precision_fallbacks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="24x12x12")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--rtols", default="1e-5,1e-6,1e-8")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    print(f"grid path on the NumPy twin, {args.shape}, {args.iterations} OC iterations, "
          f"{date.today()}, load average {os.getloadavg()[0]:.2f}\n")
    print("| rtol | compliance double | compliance mixed | relative difference "
          "| last CG iterations double / mixed (float32) | float64 re-solves | seconds double / mixed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for text in args.rtols.split(","):
        rtol = float(text)
        d = run(shape, args.iterations, "double", rtol)
        m = run(shape, args.iterations, "mixed", rtol)
        rel = abs(m["objective"] - d["objective"]) / abs(d["objective"])
        print(f"| {rtol:g} | {d['objective']:.12g} | {m['objective']:.12g} | {rel:.2e} "
              f"| {d['cg']} / {m['cg']} | {m['fallbacks']} | {d['seconds']:.1f} / "
              f"{m['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
