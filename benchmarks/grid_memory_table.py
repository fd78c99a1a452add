"""The GPU grid path's memory count (femopt.evaluation.grid_memory) as tables: every
named array of a design iteration of the 3D cantilever (hex8 elasticity, density filter,
OC) in bytes per cell, for each Krylov precision, and the estimate the memory check
compares with the free GPU memory. A count read from the code, not a measurement:
benchmarks/gpu_cli_run.py prints the measured pool.

    python benchmarks/grid_memory_table.py [--shape 512x256x256]
"""

from __future__ import annotations

import argparse

from femopt.assembly.grid_layout import GridLayout
from femopt.evaluation import grid_device, grid_memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="512x256x256")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    lay = GridLayout(shape, len(shape))
    for krylov in ("double", "mixed"):
        arrays = grid_memory.iteration_arrays(lay.n_cells, lay.n_dofs, lay.dim, lay.k, 1,
                                              krylov, n_coarse=grid_memory.coarsest_dofs(lay))
        est = grid_device.estimate_bytes(lay, krylov=krylov)
        print(f"\n{args.shape}, krylov {krylov}: estimate {est / lay.n_cells:.0f} B/cell "
              f"({est / 2**30:.1f} GiB, the count times {grid_device.MEMORY_MARGIN})\n")
        print(grid_memory.table(arrays, lay.n_cells))


if __name__ == "__main__":
    main()
