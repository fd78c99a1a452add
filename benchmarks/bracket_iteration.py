"""Seconds per design iteration of the 3D bracket (tet4) at about 100k and 1M tets.

problems/bracket_3d.yaml on finer gmsh meshes (benchmarks/bracket_meshes.py, written to a
temporary folder), filter radius 1.5 element sizes, OC, compliance at 25% volume. Each
case builds the model (``setup``: mesh, element matrices, pattern, filter weights; on the
GPU also the gather order and the copies), then runs design iterations until
--iterations or --budget seconds, whichever comes first. The first iteration (cold: no
warm start, the AMG hierarchy or the kernels' compilation) is reported apart from the
median of the following ones.

- ``cpu-amg``: PCG with pyamg smoothed aggregation, rtol 1e-8 (CPU);
- ``cpu-direct``: CHOLMOD (only up to --direct-max tets: its fill grows too fast beyond);
- ``gpu``: the GPU path on meshes from files (gather assembly, node-block Jacobi PCG
  with rtol 1e-8, warm start; femopt/evaluation/mesh_device.py);
- ``gpu-amg``: the same path with smoothed-aggregation AMG-PCG (solver amg, rtol 1e-8);
- ``twin``: the ``gpu`` case on its NumPy twin (the GPU path's code on the CPU; times only
  indicative of where the work is);
- ``twin-amg``: the ``gpu-amg`` case on the twin (its CG iterations are the GPU's, up to
  rounding: the same hierarchy and cycle).

``--setup device|host`` picks where the GPU path builds its element matrices, pattern
and gather map (``mesh_device.SETUP``; default ``device``). Each GPU or twin case also
prints its set-up split: ``element matrices``, ``pattern`` (the CSR pattern and the
gather map; with ``--setup device`` the gather's values are made with the element
matrices, batch by batch, and count as ``element matrices``), ``filter`` (the filters'
weights on the device) and ``other`` (the rest of
building the model: reading the mesh, supports, loads, the solver's node blocks, the
functions, the memory estimate), from ``MeshDevicePath.setup_seconds`` (the device
synchronized at each step) and the model's build time.

    python benchmarks/bracket_iteration.py [--sizes 100k,1M]
        [--cases cpu-amg,cpu-direct,gpu,gpu-amg,twin,twin-amg] [--setup device|host]
        [--iterations 5] [--budget 300] [--direct-max 200000] [--smoother-degree 2,3]
        [--cycle V|W] [--refine]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bracket_meshes import (bracket_mesh, bracket_problem, parse_counts,  # noqa: E402
                            refined_mesh)

SOLVERS = {"cpu-amg": {"type": "amg", "rtol": 1e-8},
           "cpu-direct": {"type": "direct"},
           "gpu": {"type": "pcg", "rtol": 1e-8, "max_iter": 20000},
           "gpu-amg": {"type": "amg", "rtol": 1e-8},
           "twin": {"type": "pcg", "rtol": 1e-8, "max_iter": 20000},
           "twin-amg": {"type": "amg", "rtol": 1e-8}}
SPLIT = ("element matrices", "pattern", "filters")
REFINE = False  # --refine: each mesh of --sizes split once into 8 tets a tet


def run_case(tets: int, case: str, iterations: int, budget: float) -> dict:
    from femopt.plugins.manager import get_registry
    from femopt.problem.load import parse_problem
    from femopt.evaluation.model import Model

    twin = case.startswith("twin")
    gpu = case.startswith("gpu") or twin
    path, size = bracket_mesh(tets)
    if REFINE:  # eight times the tets, half the element size (the filter radius with it)
        path, size = refined_mesh(path), size / 2
    data = bracket_problem(path, size, solver=SOLVERS[case])
    registry = get_registry()
    t0 = time.perf_counter()
    where = {"array_module": np} if twin else {"device": "gpu" if gpu else "cpu"}
    model = Model(parse_problem(yaml.safe_dump(data), "bracket.yaml", registry), registry,
                  **where)
    if not gpu:
        model.filters[0].H  # noqa: B018 - the filter weights belong to the setup
        if model.assembler is not None:  # and the sparse pattern, built on first use
            model.assembler.nnz  # noqa: B018
    elif not twin:
        import cupy

        cupy.cuda.runtime.deviceSynchronize()
    setup = time.perf_counter() - t0
    split = {}
    if gpu:
        steps = model.path.setup_seconds
        split = {k: steps.get(k, 0.0) for k in SPLIT}
        split["other"] = setup - sum(split.values())
        print(f"<!-- {case} set-up steps: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()) + " -->", flush=True)
    solver = model.path.solver if gpu else model.solver
    cg: list[int] = []
    started = time.perf_counter()

    def on_iteration(rec) -> bool:
        last = getattr(solver, "last", None)  # the direct solver has no iterations
        cg.append(int(last.iterations) if last is not None else 0)
        return time.perf_counter() - started > budget

    model.on_iteration = on_iteration
    model.start_clock()
    model.optimizer.run(model, model.x0.copy(), iterations)
    seconds = [h.seconds for h in model.history]
    memory = ""
    if gpu and not twin:
        import cupy

        from femopt.backend import pool_bytes
        from femopt.evaluation.mesh_device import MEMORY_MARGIN, estimate_bytes

        estimate = estimate_bytes(model)
        memory = (f"{pool_bytes(cupy) / 1e9:.2f} / {estimate / 1e9:.2f} "
                  f"({estimate / MEMORY_MARGIN / 1e9:.2f})")
    return {"memory": memory, "tets": model.mesh.n_cells, "dofs": model.n_free if not gpu
            else int(model.path.free.size), "setup": setup, "first": seconds[0],
            "rest": statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan"),
            "n": len(seconds), "cg": cg, "objective": model.history[-1].objective,
            "split": split}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100k,1M")
    ap.add_argument("--cases", default="cpu-amg,cpu-direct,gpu")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--budget", type=float, default=300.0,
                    help="stop a case after the iteration that passes this many seconds")
    ap.add_argument("--direct-max", type=int, default=200_000)
    ap.add_argument("--setup", choices=("device", "host"), default="device",
                    help="where the GPU path builds its element matrices and pattern")
    ap.add_argument("--smoother-degree", default="",
                    help="the amg cases' Chebyshev degrees, finest,coarser (e.g. 2,3); "
                         "default: the solver's")
    ap.add_argument("--cycle", choices=("V", "W"), default=None,
                    help="the amg cases' cycle; default: the solver's (V on the CPU, W on "
                         "the GPU)")
    ap.add_argument("--refine", action="store_true",
                    help="split each mesh of --sizes once, every tet into 8 (a 10M-tet "
                         "bracket from the 1.2M one where gmsh is not installed)")
    args = ap.parse_args()
    global REFINE
    REFINE = args.refine
    for case in ("cpu-amg", "gpu-amg", "twin-amg"):
        if args.smoother_degree:
            SOLVERS[case] = {**SOLVERS[case], "smoother_degree": [
                int(d) for d in args.smoother_degree.split(",")]}
        if args.cycle:
            SOLVERS[case] = {**SOLVERS[case], "cycle": args.cycle}
    from femopt.evaluation import mesh_device

    mesh_device.SETUP = args.setup
    splits = []
    print(f"# bracket_3d design iterations, {date.today().isoformat()}")
    print("| tets | free dofs | case | setup s | first it s | s/it (median of rest) | "
          "iterations | CG iterations per solve | compliance at the last | "
          "GPU GB (pool's high-water mark / estimate (before its margin)) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tets in parse_counts(args.sizes):
        for case in args.cases.split(","):
            if case == "cpu-direct" and tets > args.direct_max:
                print(f"| ~{tets} | | {case} | skipped: above --direct-max "
                      f"{args.direct_max} | | | | | | |", flush=True)
                continue
            r = run_case(tets, case, args.iterations, args.budget)
            cg = ",".join(map(str, r["cg"])) if case != "cpu-direct" else "-"
            print(f"| {r['tets']} | {r['dofs']} | {case} | {r['setup']:.1f} | "
                  f"{r['first']:.2f} | {r['rest']:.3f} | {r['n']} | {cg} | "
                  f"{r['objective']:.6g} | {r['memory']} |", flush=True)
            if r["split"]:
                splits.append((r["tets"], case, r["setup"], r["split"]))
            if case.startswith("gpu"):
                import cupy

                from femopt.backend import reset_pool

                reset_pool(cupy)
    if splits:
        print(f"\n# set-up split (--setup {args.setup}), seconds")
        print("| tets | case | set-up | element matrices | pattern | filter | other |")
        print("|---|---|---|---|---|---|---|")
        for tets, case, total, sp in splits:
            print(f"| {tets} | {case} | {total:.2f} | {sp['element matrices']:.2f} | "
                  f"{sp['pattern']:.2f} | {sp['filters']:.2f} | {sp['other']:.2f} |")


if __name__ == "__main__":
    main()
