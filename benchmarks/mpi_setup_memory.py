"""What each rank of a distributed run holds after building the model: a 3D compliant
mechanism (springs at the input line and the output point, a displacement objective and a
displacement constraint, whose functionals and springs are dof vectors) on N ranks.

Each rank traces its allocations (tracemalloc) around ``build_model(...,
distributed=world())`` and reports what is held after it and the peak during it; with
``--femopt DIR`` the package found in DIR is measured instead (an export of another
revision: ``git archive REV femopt | tar -x -C DIR``), for a before/after pair.

    python benchmarks/mpi_setup_memory.py [--shape 96x48x48] [--ranks 2] [--femopt DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from femopt.parallel.launch import mpiexec

PROBLEM = """\
name: mechanism_3d_memory
mesh: {{type: structured, shape: [{nx}, {ny}, {nz}], size: [{nx}.0, {ny}.0, {nz}.0]}}
physics: {{type: linear_elasticity}}
supports:
  - region: {{face: x_min}}
springs:
  - region: {{point: [{nx}.0, {ny}.0, {hz}.0]}}
    dofs: [x]
    stiffness: 0.1
  - region: {{box: {{min: [{hx}.0, {ny}.0, 0.0], max: [{hx}.0, {ny}.0, {nz}.0]}}}}
    dofs: [y]
    stiffness: 0.1
loads:
  - region: {{box: {{min: [{hx}.0, {ny}.0, 0.0], max: [{hx}.0, {ny}.0, {nz}.0]}}}}
    force: [0.0, -1.0, 0.0]
filters:
  - {{type: density, radius: 1.5}}
objective:
  type: compliant_mechanism
  region: {{point: [{nx}.0, {ny}.0, {hz}.0]}}
  direction: [1.0, 0.0, 0.0]
constraints:
  - {{type: volume, max: 0.3}}
  - type: displacement
    region: {{box: {{min: [{hx}.0, {ny}.0, 0.0], max: [{hx}.0, {ny}.0, {nz}.0]}}}}
    direction: [0.0, -1.0, 0.0]
    max: 100.0
optimizer: {{type: mma, max_iter: 2}}
solver: {{type: multigrid}}
output: {{picture: false}}
"""

MEASURE = """\
import json, sys, tracemalloc
import femopt
from femopt.evaluation.build import build_model
from femopt.parallel.comm import world
comm = world()
tracemalloc.start()
model = build_model(sys.argv[1], "cpu", distributed=comm)
held, peak = tracemalloc.get_traced_memory()
with open(f"{sys.argv[2]}/{comm.rank}.json", "w") as fh:
    json.dump({"rank": comm.rank, "held": held / 2**20, "peak": peak / 2**20,
               "n_dofs": model.n_dofs, "femopt": femopt.__file__}, fh)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="96x48x48")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--femopt", help="a folder holding the femopt package to measure")
    args = ap.parse_args()
    nx, ny, nz = (int(v) for v in args.shape.split("x"))
    env = dict(os.environ)
    env.pop("PMI_SIZE", None)
    if args.femopt:
        env["PYTHONPATH"] = str(Path(args.femopt).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "mechanism.yaml"
        problem.write_text(PROBLEM.format(nx=nx, ny=ny, nz=nz, hx=nx // 2, hz=nz // 2))
        # run in the temporary folder: "-c" puts the working folder first on sys.path
        proc = subprocess.run([mpiexec(), "-n", str(args.ranks), sys.executable, "-c",
                               MEASURE, str(problem), tmp], capture_output=True,
                              text=True, env=env, cwd=tmp)
        if proc.returncode:
            raise SystemExit(proc.stderr)
        rows = [json.loads((Path(tmp) / f"{r}.json").read_text())
                for r in range(args.ranks)]
    print(f"# {args.shape} mechanism, {rows[0]['n_dofs']:,} dofs, {args.ranks} ranks, "
          f"femopt from {Path(rows[0]['femopt']).parent.parent}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| rank | held after build_model (MiB) | peak during it (MiB) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['rank']} | {r['held']:.1f} | {r['peak']:.1f} |")


if __name__ == "__main__":
    main()
