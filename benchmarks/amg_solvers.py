"""AMG on the bracket's stiffness matrix, side by side: pyamg's own solver, femopt's CPU
solver (``amg``: structure once, values per design) and femopt's GPU path solver
(DeviceAMGPCG with CuPy; block-Jacobi PCG beside it), on the same matrix.

The matrix is problems/bracket_3d.yaml's on a finer mesh (benchmarks/bracket_meshes.py) at
the design after --warmup OC iterations of the CPU path, so the densities are those of a
run, not uniform. Each case solves the first load case to rtol 1e-8 from zero:

- ``setup``: everything a first design needs (pyamg: its whole hierarchy; femopt: the
  structure once and the values);
- ``values``: a new design's hierarchy values (femopt), or pyamg's whole set-up again;
- ``solve``: the CG solve, with its iteration count;
- ``error``: max |x - x_pyamg| / max |x_pyamg|.

    python benchmarks/amg_solvers.py [--sizes 100k,1M] [--cases pyamg,cpu,gpu,gpu-jacobi]
        [--warmup 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bracket_meshes import bracket_mesh, bracket_problem, parse_counts  # noqa: E402

RTOL = 1e-8


def matrix_at_a_design(tets: int, warmup: int):
    """(model, free-dof CSR matrix, right-hand side, near-null space on the free dofs)."""
    from femopt.evaluation.model import Model
    from femopt.plugins.manager import get_registry
    from femopt.problem.load import parse_problem

    path, size = bracket_mesh(tets)
    data = bracket_problem(path, size, solver={"type": "amg", "rtol": RTOL})
    registry = get_registry()
    model = Model(parse_problem(yaml.safe_dump(data), "bracket.yaml", registry), registry,
                  device="cpu")
    x = model.x0.copy()
    if warmup:
        x = model.optimizer.run(model, x, warmup).x
    rho = model.physical(x)[0]
    a = model.assembler.assemble(model.interp.value(rho), model.ke).tocsr()
    modes = np.asarray(model.physics.rigid_modes(), dtype=float)[model.assembler.free]
    return model, a, model.loads_free[:, 0].copy(), modes


def timed(fn, sync=lambda: None):
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def case_pyamg(model, a, b, modes):
    import pyamg

    def build():
        return pyamg.smoothed_aggregation_solver(a, B=modes, max_coarse=500,
                                                 symmetry="symmetric")
    ml, setup = timed(build)
    _, again = timed(build)
    res: list[float] = []
    x, solve = timed(lambda: ml.solve(b, tol=RTOL, accel="cg", maxiter=500, residuals=res))
    return x, setup, again, solve, len(res) - 1


def case_cpu(model, a, b, modes):
    from femopt.solvers.amg import AMGOptions, AMGSolver

    s = AMGSolver(AMGOptions(rtol=RTOL))
    s.bind(model.mesh, model.physics.dofs_per_node)
    s.set_near_null_space(model.physics.rigid_modes)
    s.free, s.n_dofs = model.assembler.free, model.assembler.n_dofs
    _, setup = timed(lambda: s.update(a))
    _, again = timed(lambda: s.update(a))
    x, solve = timed(lambda: s.solve(b, x0=np.zeros_like(b)))
    return x, setup, again, solve, s.last.iterations


def case_gpu(model, a, b, modes, jacobi=False):
    import cupy

    from femopt.solvers.csr_pcg import NodeBlockPCG
    from femopt.solvers.device_amg import DeviceAMGPCG

    sync = cupy.cuda.runtime.deviceSynchronize
    if jacobi:
        s = NodeBlockPCG(a.indptr, a.indices, model.assembler.free,
                         model.physics.dofs_per_node, cupy, RTOL, 20000)
    else:
        s = DeviceAMGPCG(a.indptr, a.indices, modes, cupy, RTOL, 500)
    data, bd = cupy.asarray(a.data), cupy.asarray(b)
    _, setup = timed(lambda: s.update(data), sync)
    _, again = timed(lambda: s.update(data), sync)
    x, solve = timed(lambda: s.solve(bd), sync)
    _, solve = timed(lambda: s.solve(bd), sync)  # the first solve compiles kernels
    return cupy.asnumpy(x), setup, again, solve, s.last.iterations


CASES = {"pyamg": case_pyamg, "cpu": case_cpu, "gpu": case_gpu,
         "gpu-jacobi": lambda *args: case_gpu(*args, jacobi=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100k")
    ap.add_argument("--cases", default="pyamg,cpu,gpu")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    print(f"# AMG on the bracket's matrix, {date.today().isoformat()}")
    print("| tets | free dofs | case | setup s | values s | solve s | CG iterations | "
          "error vs pyamg |")
    print("|---|---|---|---|---|---|---|---|")
    for tets in parse_counts(args.sizes):
        model, a, b, modes = matrix_at_a_design(tets, args.warmup)
        ref = None
        for case in args.cases.split(","):
            x, setup, again, solve, its = CASES[case](model, a, b, modes)
            if ref is None:
                ref = x
            err = np.abs(x - ref).max() / np.abs(ref).max()
            print(f"| {model.mesh.n_cells} | {a.shape[0]} | {case} | {setup:.3f} | "
                  f"{again:.3f} | {solve:.3f} | {its} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
