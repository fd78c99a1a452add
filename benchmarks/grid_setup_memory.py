"""Host memory of the GPU grid path's set-up, measured on its NumPy twin.

Builds the 3D cantilever of benchmarks/gpu_cli_run.py through the public API (a
``Model`` from the problem dict, ``array_module=numpy``) and reports, with tracemalloc,
the peak of the host allocations until the path is built ("host set-up": problem,
grid, supports, loads, design bounds), then the peak of building the path itself on
the twin (whose "device" arrays are host arrays here, so that figure is an upper
bound of the path's host share), both in bytes per cell, and the process's peak
resident set size.

``--host-only`` stops before the path (no twin arrays: the host set-up alone, as on a
GPU machine) and times it without tracemalloc, for sizes whose twin would not fit here.

    python benchmarks/grid_setup_memory.py [--shape 128x64x64] [--host-only]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_cli_run import problem  # noqa: E402

import femopt.evaluation.model as model_module  # noqa: E402
from femopt.evaluation.model import Model  # noqa: E402
from femopt.plugins.manager import get_registry  # noqa: E402
from femopt.problem.load import parse_problem  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128x64x64")
    ap.add_argument("--host-only", action="store_true")
    args = ap.parse_args()
    if args.host_only:
        host_only(tuple(int(v) for v in args.shape.split("x")))
        return
    shape = tuple(int(v) for v in args.shape.split("x"))
    cells = int(np.prod(shape))
    data = problem(shape, 1)
    registry = get_registry()
    loaded = parse_problem(yaml.safe_dump(data), "problem.yaml", registry)
    real_make_path = model_module.make_path
    marks = {}

    def make_path(model, xp, distributed):
        marks["setup"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        path = real_make_path(model, xp, distributed)
        marks["path"] = tracemalloc.get_traced_memory()[1] - base
        return path

    model_module.make_path = make_path
    tracemalloc.start()
    t0 = time.perf_counter()
    Model(loaded, registry, array_module=np)
    seconds = time.perf_counter() - t0
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"grid set-up on the NumPy twin, {args.shape} ({cells:,} cells), {date.today()}, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| host set-up peak (B/cell) | path on the twin (B/cell) | set-up (s, traced) "
          "| peak RSS (B/cell) |")
    print("| --- | --- | --- | --- |")
    print(f"| {marks['setup'] / cells:.1f} | {marks['path'] / cells:.1f} | {seconds:.1f} "
          f"| {rss / cells:.0f} |")


class Stop(Exception):
    pass


def host_only(shape: tuple[int, ...]) -> None:
    cells = int(np.prod(shape))
    registry = get_registry()
    loaded = parse_problem(yaml.safe_dump(problem(shape, 1)), "problem.yaml", registry)

    def make_path(model, xp, distributed):
        raise Stop

    model_module.make_path = make_path
    t0 = time.perf_counter()
    try:
        Model(loaded, registry, array_module=np)
    except Stop:
        pass
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"host set-up of the grid path (up to the path), {'x'.join(map(str, shape))} "
          f"({cells:,} cells), {date.today()}, load average {os.getloadavg()[0]:.2f}: "
          f"{seconds:.1f} s, peak RSS {rss / 2**30:.2f} GiB ({rss / cells:.0f} B/cell, "
          "the interpreter and its imports included)")


if __name__ == "__main__":
    main()
