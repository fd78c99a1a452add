"""Will the problem fit in this machine's memory? Answered from the problem file alone,
before the mesh or anything else is allocated.

The estimate is the grid's cell count times the bytes per cell that a run takes on the
path it will run on, measured with ``femopt run`` (peak resident memory less the
interpreter's, see docs/user-guide.md "How large a problem fits"). It is compared with
the memory available now (``MemAvailable`` of /proc/meminfo, or the cgroup's limit when
that is lower). Meshes read from files are not estimated here: their cell count is
known only once the file is read.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from femopt.errors import ProblemError

# Peak memory per cell of `femopt run` on the CPU path (direct solver, density filter,
# OC), measured as peak resident memory less the interpreter's (100 MB): 8.4 kB a cell on
# a 400x200 grid and 37.6 kB on a 32x16x16 grid. A direct factorization grows faster than
# the cell count (3D most), so larger grids take more than this: the guard refuses what
# surely does not fit, it does not promise the rest does.
CPU_BYTES_PER_CELL = {2: 8_500, 3: 38_000}
# What the GPU grid path keeps in host memory per cell is the largest of its phases
# (summing the loads, set-up, results), each a sum of named arrays (gpu_host_arrays; one
# node per cell, k dofs per node). The grid itself is never materialized, regions are
# index ranges, the loads are kept by their nonzeros, the design lives on the device,
# and the results are read from it by slabs of bounded size (femopt.backend.rows). The
# GPU's own memory is checked when the model is built.
BASE_BYTES = 100 * 2**20  # the interpreter with numpy, scipy and the plugins imported


def gpu_host_arrays(k: int, n_cases: int, body_loads: int = 0,
                    surface_loads: bool = False) -> dict[str, dict[str, int]]:
    """Bytes per cell of the GPU grid path's host arrays, by phase (one node per cell,
    ``k`` dofs per node, ``n_cases`` load cases, ``body_loads`` body loads in all the
    cases; a surface load in some case or none).

    The loads are kept by their nonzeros (:class:`~femopt.evaluation.load_nonzeros.
    LoadNonzeros`): a nodal or surface load's on a point, line or face take nothing per
    cell; a body load's, or a nodal load's on a box (``body_loads`` counts both), may
    cover every dof (counted so: the region is not resolved here). The phases:
    ``loads`` (while the loads are summed: the body loads' pieces and their sum, a
    surface load's vector while its nonzeros are taken),
    ``set-up`` (the loads' nonzeros, the test that some loaded dof is free, the free-dof
    mask and the path's and the multigrid solver's supported-dof masks) and ``results``
    (the masks and nonzeros still held, the cells an exported part keeps and the loaded
    nodes; the final densities and states stay on the device and are written by slabs of
    at most 16 MiB, not counted per cell)."""
    b = body_loads
    masks = {"free-dof and supported-dof masks (3 bool per dof)": 3 * k}
    held = ({"body loads' nonzeros (int64 index and float64 per case, per dof)":
             8 * (1 + n_cases) * k} if b else {})
    loads: dict[str, int] = {}
    if b:
        loads["body loads' pieces (int64 and float64 per dof and body load)"] = 16 * b * k
        loads["their sum (per dof: the pieces' positions concatenated, a sorted copy and "
              "flags per body load; the distinct positions)"] = (17 * b + 8) * k
    if surface_loads:
        loads["a surface load's vector and its scaled copy (2 float64 per dof)"] = 16 * k
        loads["its region's node mask and its copy (2 bool per node)"] = 2
    test = ({"the loaded-dof test (np.isin: 4 int64 per loaded dof)": 32 * k} if b else {})
    return {
        "loads": loads,
        "set-up": {**held, **test, **masks},
        "results": {**held, **masks,
                    "kept cells and loaded nodes (bool per cell and per node)": 2},
    }


def gpu_host_bytes_per_cell(k: int, n_cases: int = 1, body_loads: int = 0,
                            surface_loads: bool = False) -> int:
    phases = gpu_host_arrays(k, n_cases, body_loads, surface_loads)
    return max(sum(phase.values()) for phase in phases.values())


@dataclass
class SizeEstimate:
    cells: int
    dim: int
    path: str  # "cpu" or "gpu"
    bytes_per_cell: int

    @property
    def bytes(self) -> int:
        return BASE_BYTES + self.cells * self.bytes_per_cell


def available_memory() -> int | None:
    """Bytes of memory this process may still take: MemAvailable, or the cgroup's
    limit less its usage when that is lower; None when neither can be read."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            left = int(limit) - used
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    return avail


def _path_for(device: str) -> str:
    """The path a run takes: auto is the GPU where CuPy sees one (the model asks the
    same a moment later; a problem the GPU path cannot take still falls back to the CPU,
    which this estimate does not foresee)."""
    if device in ("cpu", "gpu"):
        return device
    if importlib.util.find_spec("cupy") is None:
        return "cpu"
    from femopt.backend import gpu_status

    return "gpu" if gpu_status()[0] else "cpu"


def estimate(loaded: Any, device: str | None = None) -> SizeEstimate | None:
    """The memory a run of ``loaded`` (a validated problem) needs, from its structured
    grid's shape; None for a mesh read from a file."""
    mesh = loaded.sections.get("mesh")
    shape = getattr(getattr(mesh, "options", None), "shape", None)
    if mesh is None or mesh.type != "structured" or not shape:
        return None
    dim = len(shape)
    path = _path_for(device or loaded.problem.device)
    if path == "cpu":
        return SizeEstimate(math.prod(shape), dim, path, CPU_BYTES_PER_CELL[dim])
    per_cell = gpu_host_bytes_per_cell(*gpu_host_counts(loaded, dim))
    return SizeEstimate(math.prod(shape), dim, path, per_cell)


def gpu_host_counts(loaded: Any, dim: int) -> tuple[int, int, int, bool]:
    """:func:`gpu_host_arrays`' arguments for the problem ``loaded`` on a ``dim``-D grid:
    its dofs per node, its load cases, its loads that may cover every node, and whether
    one is a surface load."""
    physics = loaded.sections.get("physics")
    scalar = getattr(physics, "type", None) in ("heat_conduction", "convection_diffusion")
    k = 1 if scalar else dim  # a physics of another plugin: counted as elasticity
    p = loaded.problem
    cases = [c.loads for c in p.load_cases] if p.load_cases else [p.loads or []]
    loads = [load for case in cases for load in case]
    return (k, len(cases), sum(_per_node(ld) for ld in loads),
            any(ld.surface for ld in loads))


def _per_node(load: Any) -> bool:
    """A load whose nonzeros may cover every node: a body load, or a nodal one on a box
    alone (a volume of nodes; a face or a point limits it to a face or a point)."""
    r = load.region
    return bool(load.body) or (not load.surface and r is not None and r.box is not None
                               and r.face is None and r.point is None)


def check_size(loaded: Any, device: str | None = None) -> SizeEstimate | None:
    """Refuse a problem that does not fit in the memory available now.

    Raises:
        ProblemError located at ``mesh.shape`` with both numbers.
    """
    est = estimate(loaded, device)
    if est is None:
        return None
    avail = available_memory()
    if avail is not None and est.bytes > avail:
        where = "the CPU path" if est.path == "cpu" else "the host side of the GPU path"
        hint = " or --device gpu" if est.path == "cpu" else ""
        raise ProblemError(loaded.filename, [loaded.issue(
            ("mesh", "shape"),
            f"the problem needs about {_gib(est.bytes)} of memory on {where} ({est.cells:,} "
            f"cells x {est.bytes_per_cell:,} bytes per cell, estimated) but "
            f"{_gib(avail)} are available; use a coarser grid{hint}")])
    return est


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n < 2**40 else f"{n / 2**40:,.4g} TiB"
