"""Host memory of the loads in the GPU grid path's set-up, beside the size guard's estimate.

For each kind of load (a point, a face's nodes, a traction on a face, a body load) in 1
and in 3 load cases, builds the ``Model`` of a cantilever grid through the public API
(the problem as a dict, ``array_module=numpy``: the GPU grid path's NumPy twin) and
reports tracemalloc's peak of the host allocations until the path is built (the host
set-up: supports, loads, design; the path is not built) and what is still held then, in
bytes per cell, with ``femopt.problem.size``'s estimate for the same problem file (its
phases: summing the loads, set-up with the dof masks, results).

    python benchmarks/host_loads_memory.py [--shape 1200x1000] [--kinds point,body]
"""

from __future__ import annotations

import argparse
import copy
import os
import tracemalloc
from datetime import date

import numpy as np
import yaml

import femopt.evaluation.model as model_module
from femopt.evaluation.model import Model
from femopt.plugins.manager import get_registry
from femopt.problem import size
from femopt.problem.load import parse_problem


def loads_of(shape: tuple[int, ...]) -> dict[str, dict]:
    dim = len(shape)
    down = [0.0, -1.0, 0.0][:dim]
    corner = [float(shape[0])] + [0.0] * (dim - 1)
    return {
        "point": {"region": {"point": corner}, "force": down},
        "face": {"region": {"face": "x_max"}, "force": down, "distribute": "total"},
        "traction": {"region": {"face": "x_max"}, "traction": down},
        "body": {"body": True, "force": down},
    }


def problem(shape: tuple[int, ...], load: dict, n_cases: int) -> dict:
    return {
        "name": "host_loads",
        "mesh": {"type": "structured", "shape": list(shape),
                 "size": [float(n) for n in shape]},
        "physics": {"type": "linear_elasticity"},
        "supports": [{"region": {"face": "x_min"}}],
        "load_cases": [{"loads": [copy.deepcopy(load)]} for _ in range(n_cases)],
        "filters": [{"type": "density", "radius": 1.5}],
        "objective": {"type": "compliance"},
        "constraints": [{"type": "volume", "max": 0.5}],
        "optimizer": {"type": "oc", "max_iter": 1},
        "solver": {"type": "multigrid"},
        "device": "gpu",
    }


class Stop(Exception):
    pass


def measure(loaded, registry) -> tuple[int, int]:
    """(peak, held) bytes of the host set-up up to the path."""
    marks = {}

    def make_path(model, xp, distributed):
        marks["held"], marks["peak"] = tracemalloc.get_traced_memory()
        raise Stop

    real = model_module.make_path
    model_module.make_path = make_path
    tracemalloc.start()
    try:
        Model(loaded, registry, array_module=np)
    except Stop:
        pass
    finally:
        tracemalloc.stop()
        model_module.make_path = real
    return marks["peak"], marks["held"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1200x1000")
    ap.add_argument("--kinds", default="point,face,traction,body")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    cells = int(np.prod(shape))
    registry = get_registry()
    kinds = loads_of(shape)
    print(f"host set-up of the grid path (NumPy twin), {args.shape} ({cells:,} cells), "
          f"{date.today()}, load average {os.getloadavg()[0]:.2f}\n")
    print("| load | cases | measured peak (B/cell) | held at the path (B/cell) "
          "| estimate: loads / set-up / results (B/cell) | estimate (B/cell) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in args.kinds.split(","):
        for n_cases in (1, 3):
            text = yaml.safe_dump(problem(shape, kinds[kind], n_cases))
            loaded = parse_problem(text, "problem.yaml", registry)
            measure(loaded, registry)  # imports and caches outside the measurement
            peak, held = measure(loaded, registry)
            est = size.estimate(loaded, "gpu")
            phases = size.gpu_host_arrays(*size.gpu_host_counts(loaded, len(shape)))
            each = " / ".join(str(sum(ph.values())) for ph in phases.values())
            print(f"| {kind} | {n_cases} | {peak / cells:.1f} | {held / cells:.1f} | "
                  f"{each} | {est.bytes_per_cell} |")


if __name__ == "__main__":
    main()
