"""Host memory of the GPU grid path's output step, measured on its NumPy twin.

Runs the 3D cantilever of benchmarks/gpu_cli_run.py (one design iteration, no
series or checkpoint: design.vtu, design.npy, density.npy and summary.json are
written; design.png too with ``--picture``) through ``femopt.runner.run_model`` on a model built with
``array_module=numpy`` and reports, with tracemalloc, the peak of the host allocations
of the output step: from the moment the final analysis has its values (its forward
solve and function values are device work) to the end of the run (the fields brought
to the host, design.npy, density.npy, the design result, design.vtu).

On the twin the "device" arrays are host arrays and ``to_host`` copies nothing; here
every ``to_host`` of femopt's modules is replaced by one that copies, as a copy from a
GPU does, so that the figure counts what a GPU run's host holds (plus the twin's
"device" scratch of the output step: a slab transposed before its copy).

``--chunks scaled`` scales the slab (``femopt.backend.rows.SLAB_BYTES``), the VTU
writer's chunk (``femopt.io.vtu.CHUNK_BYTES``) and the rows of the passes over the mesh
(``femopt.mesh.mesh.ROWS``, ``femopt.io.results.KEPT_ROWS``), those a version has, by
cells / 33.5M: a chunk is then the fraction of the whole it is at 512x256x256 with the
defaults, which at a small size are one chunk of everything. Run
it with ``PYTHONPATH`` at an export of another version's ``femopt/`` to compare.
``--writer large`` (the default) writes design.vtu as designs above
``femopt.io.vtu.COMPRESS_UP_TO`` cells are written (uncompressed, by chunks), as at
512x256x256; ``--writer size`` lets the size choose (zlib up to 1M cells, whose
compressed blocks are held until the file is written).

    python benchmarks/output_host_memory.py [--shape 128x64x64] [--chunks default|scaled]
        [--writer large|size] [--picture]
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


def copying_to_host() -> None:
    """Every femopt module's ``to_host`` copies (as ``cupy.ndarray.get`` does)."""
    real = femopt.backend.to_host

    def to_host(a):
        return np.array(real(a), copy=True)

    for name, module in list(sys.modules.items()):
        if name.startswith("femopt") and getattr(module, "to_host", None) is real:
            module.to_host = to_host


def set_chunks(scale: float | None, large: bool) -> dict[str, int]:
    """Scale the writers' chunk and slab and the passes' rows by ``scale`` (None: keep
    the defaults); ``large``: write design.vtu as a large design. Returns them."""
    import femopt.io.results as results
    import femopt.io.vtu as vtu
    import femopt.mesh.mesh as mesh

    try:
        import femopt.backend.rows as rows
    except ImportError:  # a version without it: the writers took whole arrays
        rows = None
    if scale is not None:
        vtu.CHUNK_BYTES = max(4096, int(vtu.CHUNK_BYTES * scale))
        mesh.ROWS = max(1024, int(mesh.ROWS * scale))
        if hasattr(results, "KEPT_ROWS"):
            results.KEPT_ROWS = max(1024, int(results.KEPT_ROWS * scale))
        if rows is not None:
            rows.SLAB_BYTES = max(4096, int(rows.SLAB_BYTES * scale))
    if large:
        vtu.COMPRESS_UP_TO = 0
    return {"chunk": vtu.CHUNK_BYTES, "slab": rows.SLAB_BYTES if rows else 0,
            "rows": mesh.ROWS, "kept": getattr(results, "KEPT_ROWS", mesh.ROWS)}


def measure(shape: tuple[int, int, int], scale: float | None, large: bool,
            picture: bool = False) -> dict:
    cells = int(np.prod(shape))
    data = problem(shape, 1)
    data["output"]["picture"] = picture
    text = yaml.safe_dump(data)
    registry = get_registry()
    model = Model(parse_problem(text, "problem.yaml", registry), registry, array_module=np)
    copying_to_host()
    chunks = set_chunks(scale, large)
    marks: dict = {}
    real_final, real_modal = model.final_analysis, model.path.modal_terms

    def final_analysis(*args, **kwargs):
        marks["final"] = True
        return real_final(*args, **kwargs)

    def modal_terms(*args, **kwargs):  # the last of the final analysis' values
        out = real_modal(*args, **kwargs)
        if marks.get("final") and not tracemalloc.is_tracing():
            tracemalloc.start()  # the output step: the final values are known
            marks["t0"] = time.perf_counter()
        return out

    model.final_analysis, model.path.modal_terms = final_analysis, modal_terms
    with tempfile.TemporaryDirectory() as tmp:
        run_model(model, text.encode(), Path(tmp) / "out", quiet=True)
        seconds = time.perf_counter() - marks["t0"]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = (Path(tmp) / "out" / "design.vtu").stat().st_size
    return {"cells": cells, "peak": peak, "seconds": seconds, "vtu": size, **chunks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128x64x64")
    ap.add_argument("--chunks", choices=["default", "scaled"], default="default")
    ap.add_argument("--writer", choices=["large", "size"], default="large")
    ap.add_argument("--picture", action="store_true", help="design.png as well")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    cells = int(np.prod(shape))
    scale = cells / PRODUCTION_CELLS if args.chunks == "scaled" else None
    r = measure(shape, scale, args.writer == "large", args.picture)
    print(f"output step on the NumPy twin, {args.shape} ({cells:,} cells), {date.today()}, "
          f"femopt from {Path(femopt.__file__).parent}, design.vtu writer {args.writer}, "
          f"chunks {args.chunks}, picture {args.picture}, load average {os.getloadavg()[0]:.2f}\n")
    print("| cells | VTU chunk (KiB) | slab (KiB) | mesh rows | kept-cells rows "
          "| output step peak (MB) | output step peak (B/cell) | output step (s, traced) "
          "| design.vtu (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {cells:,} | {r['chunk'] >> 10} | {r['slab'] >> 10} | {r['rows']:,} "
          f"| {r['kept']:,} | {r['peak'] / 1e6:.1f} | {r['peak'] / cells:.1f} "
          f"| {r['seconds']:.1f} | {r['vtu'] / 1e6:.1f} |")


if __name__ == "__main__":
    main()
