"""Host memory and time of a 3D grid's design picture (``femopt.io.plots.design_picture``,
what ``output.picture`` draws at the end of a run), for densities given as a host array
(the CPU path) and as a :class:`~femopt.backend.rows.RowSource` (the GPU paths, here a
host array read by rows).

The design is a seeded one: a beam through the box along x with a few random holes, so
that the surface has the size of a real design's. tracemalloc's peak counts every host
allocation of the call (the coarsened field, matplotlib's rendering), the densities
themselves and matplotlib's first use (a small picture drawn before) excepted; the time
is the call's wall time without tracemalloc. Run it with ``PYTHONPATH`` at an export of
another version's ``femopt/`` to compare.

    python benchmarks/picture_memory.py [--shapes 128x64x64,256x128x128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

import femopt
from femopt.backend.rows import cell_rows
from femopt.io.plots import design_picture
from femopt.mesh.structured import structured_grid


def design(shape: tuple[int, int, int]) -> np.ndarray:
    """Densities (cells x fastest): 1 in a beam of half the box's height and depth,
    with spherical holes at seeded places, 0 elsewhere."""
    nx, ny, nz = shape
    z, y, x = np.meshgrid(np.arange(nz) + 0.5, np.arange(ny) + 0.5, np.arange(nx) + 0.5,
                          indexing="ij")
    rho = ((np.abs(y - ny / 2) < ny / 4) & (np.abs(z - nz / 2) < nz / 4)).astype(float)
    rng = np.random.default_rng(0)
    r = ny / 10
    for cx in rng.uniform(0, nx, 8):
        rho[(x - cx) ** 2 + (y - ny / 2) ** 2 < r * r] = 0.0
    return rho.reshape(-1)


def measure(mesh, rho, path: Path) -> tuple[float, float]:
    """(peak MB of the call's host allocations, seconds of the call)."""
    tracemalloc.start()
    design_picture(mesh, rho, path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t = time.perf_counter()
    design_picture(mesh, rho, path)
    return peak / 1e6, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="128x64x64,256x128x128")
    args = ap.parse_args()
    print(f"design_picture of a 3D grid, femopt from {Path(femopt.__file__).parent}, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| grid | cells | densities | peak (MB) | peak (B/cell) | time (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        small = (8, 4, 4)  # matplotlib's imports and caches, before anything is counted
        design_picture(structured_grid(small, small), design(small), Path(tmp) / "w.png")
        for text in args.shapes.split(","):
            shape = tuple(int(v) for v in text.split("x"))
            mesh = structured_grid(shape, [float(n) for n in shape])
            rho = design(shape)
            for label, field in (("host array", rho), ("RowSource", cell_rows(rho))):
                peak, seconds = measure(mesh, field, Path(tmp) / "design.png")
                print(f"| {text} | {rho.size:,} | {label} | {peak:.1f} | "
                      f"{peak * 1e6 / rho.size:.1f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
