"""Host memory of the GPU grid path's output step, measured on its NumPy twin.

Runs the 3D cantilever of benchmarks/gpu_cli_run.py (one design iteration, no picture,
series or checkpoint: design.vtu, design.npy, density.npy and summary.json are
written) through ``femopt.runner.run_model`` on a model built with
``array_module=numpy`` and reports, with tracemalloc, the peak of the host allocations
of the output step: from the end of the final analysis' forward solve to the end of
the run (the values, the fields brought to the host, design.npy, density.npy, the
design result, design.vtu).

On the twin the "device" arrays are host arrays and ``to_host`` copies nothing; here
every ``to_host`` of femopt's modules is replaced by one that copies, as a copy from a
GPU does, so that the figure counts what a GPU run's host holds (plus the twin's
"device" scratch of the output step: a slab transposed before its copy).

``--slab-bytes`` sets the slab (``femopt.backend.rows.SLAB_BYTES``) and the VTU writer's
chunk (``femopt.io.vtu.CHUNK_BYTES``) together; 0 keeps the default 64 MiB, "scaled"
scales it by cells / 33.5M (the ratio of slab to field of 512x256x256 at 64 MiB). Run
it with ``PYTHONPATH`` at an export of another version's ``femopt/`` to compare.

    python benchmarks/output_host_memory.py [--shape 128x64x64] [--slab-bytes 0|scaled|N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_cli_run import problem  # noqa: E402

import femopt  # noqa: E402
import femopt.backend  # noqa: E402
from femopt.evaluation.model import Model  # noqa: E402
from femopt.plugins.manager import get_registry  # noqa: E402
from femopt.problem.load import parse_problem  # noqa: E402
from femopt.runner import run_model  # noqa: E402

PRODUCTION_CELLS = 512 * 256 * 256
DEFAULT_SLAB = 64 << 20


def copying_to_host() -> None:
    """Every femopt module's ``to_host`` copies (as ``cupy.ndarray.get`` does)."""
    real = femopt.backend.to_host

    def to_host(a):
        return np.array(real(a), copy=True)

    for name, module in list(sys.modules.items()):
        if name.startswith("femopt") and getattr(module, "to_host", None) is real:
            module.to_host = to_host


def set_slab(nbytes: int) -> None:
    import femopt.io.vtu as vtu

    vtu.CHUNK_BYTES = nbytes
    rows = sys.modules.get("femopt.backend.rows")
    if rows is None:
        try:
            import femopt.backend.rows as rows
        except ImportError:  # a version without it: the writers took whole arrays
            return
    rows.SLAB_BYTES = nbytes


def measure(shape: tuple[int, int, int], slab: int) -> dict:
    cells = int(np.prod(shape))
    data = problem(shape, 1)
    text = yaml.safe_dump(data)
    registry = get_registry()
    model = Model(parse_problem(text, "problem.yaml", registry), registry, array_module=np)
    copying_to_host()
    set_slab(slab)
    marks: dict = {}
    real_final, real_analyse = model.final_analysis, model.path.analyse

    def final_analysis(*args, **kwargs):
        marks["final"] = True
        return real_final(*args, **kwargs)

    def analyse(rho):
        out = real_analyse(rho)
        if marks.get("final") and not tracemalloc.is_tracing():
            tracemalloc.start()  # the output step: after the final forward solve
            marks["t0"] = time.perf_counter()
        return out

    model.final_analysis, model.path.analyse = final_analysis, analyse
    with tempfile.TemporaryDirectory() as tmp:
        run_model(model, text.encode(), Path(tmp) / "out", quiet=True)
        seconds = time.perf_counter() - marks["t0"]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = (Path(tmp) / "out" / "design.vtu").stat().st_size
    return {"cells": cells, "peak": peak, "seconds": seconds, "vtu": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128x64x64")
    ap.add_argument("--slab-bytes", default="0")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    cells = int(np.prod(shape))
    if args.slab_bytes == "scaled":
        slab = max(4096, DEFAULT_SLAB * cells // PRODUCTION_CELLS)
    else:
        slab = int(args.slab_bytes) or DEFAULT_SLAB
    r = measure(shape, slab)
    print(f"output step on the NumPy twin, {args.shape} ({cells:,} cells), {date.today()}, "
          f"femopt from {Path(femopt.__file__).parent}, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| cells | slab (KiB) | output step peak (MB) | output step peak (B/cell) "
          "| output step (s, traced) | design.vtu (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {cells:,} | {slab >> 10} | {r['peak'] / 1e6:.1f} | {r['peak'] / cells:.1f} "
          f"| {r['seconds']:.1f} | {r['vtu'] / 1e6:.1f} |")


if __name__ == "__main__":
    main()
