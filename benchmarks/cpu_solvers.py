"""CPU seconds per design iteration of the classic problems with each linear solver,
side by side in one run: the direct solver (CHOLMOD where cvxopt is installed, SuperLU),
femopt's geometric multigrid (grids) and pyamg's AMG, and the default femopt picks.

    python benchmarks/cpu_solvers.py [--iterations N] [--cases mbb150,mbb300,cant3d]

Each run is the problem as a user writes it, with only ``solver:`` changed, for a fixed
number of OC iterations (tol 1e-12 so none stops early); the time is the optimizer's loop,
without setup. The last column is the compliance after those iterations.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def mbb(nx: int, ny: int) -> dict:
    data = yaml.safe_load((ROOT / "problems" / "mbb_beam.yaml").read_text())
    data["name"] = f"mbb_{nx}x{ny}"
    data["mesh"].update(shape=[nx, ny], size=[float(nx), float(ny)])
    data["supports"][1]["region"] = {"point": [float(nx), 0.0]}
    data["loads"][0]["region"] = {"point": [0.0, float(ny)]}
    return data


CASES = {
    "mbb60": lambda: mbb(60, 20),
    "mbb100": lambda: mbb(100, 34),
    "mbb150": lambda: mbb(150, 50),
    "mbb300": lambda: mbb(300, 100),
    "cant3d": lambda: yaml.safe_load((ROOT / "problems" / "cantilever_3d.yaml").read_text()),
    "lbracket": lambda: {k: v for k, v in yaml.safe_load(  # "default": without its solver
        (ROOT / "problems" / "l_bracket_stress.yaml").read_text()).items() if k != "solver"},
    "bracket3d": lambda: yaml.safe_load((ROOT / "problems" / "bracket_3d.yaml").read_text()),
}
SOLVERS = {
    "default": None,
    "cholmod": {"type": "direct", "method": "cholmod"},
    "superlu": {"type": "direct", "method": "superlu"},
    "multigrid": {"type": "multigrid"},
    "amg": {"type": "amg"},
}


def seconds_per_iteration(data: dict, iterations: int) -> tuple[str, float, float]:
    from femopt.api import Problem
    from femopt.solvers.choice import describe

    data = dict(data)
    data["optimizer"] = dict(data["optimizer"], max_iter=iterations, tol=1e-12)
    model = Problem.from_dict(data, base_dir=ROOT / "problems").build(device="cpu")
    model.start_clock()
    t0 = time.perf_counter()
    model.optimizer.run(model, model.x0.copy(), iterations)
    return describe(model.solver), (time.perf_counter() - t0) / iterations, model.history[-1].objective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--solvers", default=",".join(SOLVERS))
    args = ap.parse_args()
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"# {date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.iterations} iterations each, OPENBLAS_NUM_THREADS={threads}, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    print("| problem | solver | picked | s/it | compliance |")
    print("|---|---|---|---|---|")
    for case in args.cases.split(","):
        for name in args.solvers.split(","):
            data = CASES[case]()
            if SOLVERS[name] is not None:
                data["solver"] = SOLVERS[name]
            try:
                label, sec, c = seconds_per_iteration(data, args.iterations)
            except Exception as exc:  # noqa: BLE001 - a solver that cannot run this case
                print(f"| {case} | {name} | not run: {exc} | | |", flush=True)
                continue
            print(f"| {case} | {name} | {label} | {sec:.4f} | {c:.4f} |", flush=True)


if __name__ == "__main__":
    main()
