"""tet4 elasticity assembly throughput (elements per second), CPU and GPU.

The 3D bracket (problems/make_bracket_3d.py) meshed by gmsh at about 100k and 1M tets
(benchmarks/bracket_meshes.py; the meshes go to a temporary folder), bolts clamped, the
free-dof stiffness K = sum_e s_e K0_e with a random design s_e.

CPU (``FixedPatternAssembler``):
- ``K0_e``: the element matrices of full material (once per mesh);
- ``pattern``: the free-dof CSR pattern (from the node graph) and the CSR slot of every
  element-matrix entry (once per mesh);
- ``gather``: the gather matrix G (n_cells x nnz: the entries at their slots, the
  element matrices' own array as its values; once per mesh);
- ``values``: the assembly of one design, the product G^T s (every iteration);
- ``full``: all four, what an assembly from scratch costs.

The peak resident memory of the process is printed after each mesh.

GPU (``GatherAssembler``, CUDA events after two warm-up launches, median of --repeat):
- ``gather f64`` / ``gather f32``: ``femopt_assembly_csr_gather``, one thread per CSR
  value (what the GPU path runs);
- ``atomic f64``: ``femopt_assembly_csr_scatter_cells``, one thread per element-matrix
  entry with atomic adds (the alternative; needs a zeroed array);
- ``setup``: the gather order on the host and the copies to the device (once per mesh);
- ``device K0_e`` / ``device pattern``: the set-up the GPU path runs now, on the device
  (``element_batches.element_matrices_batched``; ``csr_pattern.build_pattern`` and the
  gather of the entries, ``GatherAssembler.on_device``), checked equal to the host's
  (the pattern and gather map exactly, the element matrices to 1e-12).

``--devices twin`` runs those two on NumPy (the GPU code on the CPU; indicative only).

GB/s is the bytes a GPU kernel must move (entries, cells, design, values, offsets) per
second; the H100's device copy reaches 3.0 TB/s.

    python benchmarks/tet4_assembly.py [--sizes 100k,1M] [--devices cpu,gpu,twin] [--repeat 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from femopt.backend import release_cached

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bracket_meshes import bracket_mesh, parse_counts  # noqa: E402


def setup(tets: int):
    from femopt.mesh.meshfile import read_mesh_file
    from femopt.physics.elasticity import ElasticityOptions, LinearElasticity

    path, _ = bracket_mesh(tets)
    mesh = read_mesh_file(path)
    physics = LinearElasticity(ElasticityOptions(E=210000.0, nu=0.3), mesh)
    fixed = (mesh.node_sets["bolts"][:, None] * 3 + np.arange(3)).ravel()
    mask = np.ones(mesh.n_nodes * 3, dtype=bool)
    mask[fixed] = False
    return mesh, physics, np.flatnonzero(mask)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_timed(fn, repeat: int) -> float:
    import cupy

    for _ in range(2):
        fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100k,1M", help="target tet counts")
    ap.add_argument("--devices", default="cpu,gpu")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    devices = args.devices.split(",")

    from femopt.assembly.sparse import FixedPatternAssembler

    print(f"# tet4 assembly, {date.today().isoformat()}")
    print("| tets | free dofs | CSR nnz | entries | device | step | seconds | elements/s | "
          "GB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tets in parse_counts(args.sizes):
        mesh, physics, free = setup(tets)
        n = mesh.n_cells
        r = np.random.default_rng(0)
        scale = 1e-9 + r.uniform(size=n) ** 3
        t0 = time.perf_counter()
        ke = physics.element_matrices()
        t_ke = time.perf_counter() - t0
        t0 = time.perf_counter()
        asm = FixedPatternAssembler(physics.cell_dofs(), mesh.n_nodes * 3, free, 3)
        asm.nnz  # noqa: B018 - the pattern is built on first use: inside the timer
        t_pattern = time.perf_counter() - t0
        t0 = time.perf_counter()
        asm.gather_matrix(ke)
        t_gather = time.perf_counter() - t0
        entries = int(np.count_nonzero(asm.cell_slots != asm.nnz))  # on two free dofs
        head = f"| {n} | {free.size} | {asm.nnz} | {entries} |"

        def row(device: str, step: str, seconds: float, nbytes: float = 0.0) -> None:
            rate = f"{nbytes / seconds / 1e9:.0f}" if nbytes else ""
            print(f"{head} {device} | {step} | {seconds:.4g} | {n / seconds:.3g} | {rate} |",
                  flush=True)

        def moved(real: int, atomic: bool = False) -> float:
            """Bytes a kernel must move: each entry and its cell (and slot), the design,
            the values (written; read and written by the atomics) and the offsets."""
            e = entries * (real + 4 + (4 if atomic else 0))
            return e + n * real + asm.nnz * (2 * real if atomic else real + 8)

        if "cpu" in devices:
            t_values = timed(lambda: asm.assemble_data(scale, ke), args.repeat)
            row("CPU", "K0_e", t_ke)
            row("CPU", "pattern", t_pattern)
            row("CPU", "gather", t_gather)
            row("CPU", "values", t_values)
            row("CPU", "full", t_ke + t_pattern + t_gather + t_values)
        if "gpu" in devices:
            import cupy

            from femopt.assembly.csr_gather import GatherAssembler

            t0 = time.perf_counter()
            dev = GatherAssembler(asm, ke, cupy)
            cupy.cuda.runtime.deviceSynchronize()
            row("GPU", "setup", time.perf_counter() - t0)
            s64 = cupy.asarray(scale)
            ref = asm.assemble_data(scale, ke)
            got = cupy.asnumpy(dev.assemble_data(s64))
            assert np.array_equal(got, ref), "the gather kernel differs from the CPU"
            row("GPU", "gather f64", gpu_timed(lambda: dev.assemble_data(s64), args.repeat),
                moved(8))
            row("GPU", "atomic f64", gpu_timed(lambda: dev.assemble_data_atomic(s64),
                                               args.repeat), moved(8, atomic=True))
            del dev
            dev32 = GatherAssembler(asm, ke, cupy, np.float32)
            s32 = cupy.asarray(scale, dtype=np.float32)
            row("GPU", "gather f32", gpu_timed(lambda: dev32.assemble_data(s32), args.repeat),
                moved(4))
            del dev32, s64, s32
            release_cached(cupy)
        for device in ("gpu", "twin"):
            if device in devices:
                for step, seconds in device_setup(mesh, physics, free, asm, ke, device):
                    row("GPU" if device == "gpu" else "twin", step, seconds)
        asm = ke = None  # free the host arrays before the next mesh
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"peak RSS so far: {peak:.2f} GB", flush=True)


def device_setup(mesh, physics, free, asm, ke, device: str) -> list[tuple[str, float]]:
    """Seconds of the GPU path's set-up on ``device`` (element matrices; pattern and
    gather map), each checked against the host's."""
    from femopt.assembly.csr_gather import GatherAssembler, gather_map
    from femopt.assembly.csr_pattern import build_pattern
    from femopt.assembly.element_batches import element_matrices_batched

    if device == "gpu":
        import cupy as xp

        sync = xp.cuda.runtime.deviceSynchronize
        host = xp.asnumpy
    else:
        xp, sync, host = np, (lambda: None), np.asarray
    points, cells, dev_free = xp.asarray(mesh.points), xp.asarray(mesh.cells), xp.asarray(free)
    sync()
    t0 = time.perf_counter()
    dev_ke = element_matrices_batched(physics.element_kernel(), points, cells, xp)
    sync()
    t_ke = time.perf_counter() - t0
    t0 = time.perf_counter()
    pattern = build_pattern(cells, 3, dev_free, mesh.n_nodes * 3, xp)
    gather = GatherAssembler.on_device(pattern, dev_ke)
    sync()
    t_pattern = time.perf_counter() - t0
    scale = np.abs(ke).max(axis=(1, 2))[:, None, None]
    assert (np.abs(host(dev_ke) - ke) / scale).max() <= 1e-12, "element matrices differ"
    assert np.array_equal(host(pattern.indptr), asm.indptr)
    assert np.array_equal(host(pattern.indices), asm.indices)
    ptr, cell, _ = gather_map(asm, ke)
    assert np.array_equal(host(gather.ptr), ptr) and np.array_equal(host(gather.cell), cell)
    del dev_ke, pattern, gather
    if device == "gpu":
        release_cached(xp)
    return [("device K0_e", t_ke), ("device pattern", t_pattern)]


if __name__ == "__main__":
    main()
