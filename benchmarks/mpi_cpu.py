"""A distributed run on the CPU (or on GPUs): seconds per design iteration and each
rank's peak memory on 1 and 2 ranks.

The 3D cantilever of ``problems/cantilever_3d.yaml`` scaled to a larger grid (clamped at
x = 0, loads on the bottom edge of the free end, density filter of radius 1.5 cells, OC,
the multigrid solver), run with ``femopt run --ranks N`` for a few iterations; the
seconds per iteration are the median of history.csv's after the first (which also builds
the hierarchy); the peak resident memory of each rank is the run's summary.json
(``peak_rss_mib``, one entry per rank). Both runs must give the same iterations and
objectives (checked: 1e-10 relative on the CPU, 1e-6 on the GPU, whose sums are not
rank-count independent). The overhead column is the seconds per iteration over the
first rank count's.

With ``--device gpu`` every rank runs on GPU ``rank % n_gpus`` (two ranks on one GPU
share it); rank count 0 is the one-process GPU path (``femopt run`` without
``--ranks``), for comparison.

    python benchmarks/mpi_cpu.py [--shape 96x32x32] [--iterations 6] [--ranks 1,2]
                                 [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

PROBLEM = """\
name: cantilever_mpi_benchmark
mesh: {{type: structured, shape: [{nx}, {ny}, {nz}], size: [{nx}.0, {ny}.0, {nz}.0]}}
physics: {{type: linear_elasticity, E: 1.0, nu: 0.3}}
supports:
  - region: {{face: x_min}}
loads:
  - region: {{box: {{min: [{nx}.0, 0.0, 0.0], max: [{nx}.0, 0.0, {nz}.0]}}}}
    force: [0.0, -1.0, 0.0]
filters:
  - {{type: density, radius: 1.5}}
objective: {{type: compliance}}
constraints:
  - {{type: volume, max: 0.3}}
optimizer: {{type: oc, max_iter: {iterations}}}
solver: {{type: multigrid}}
output: {{picture: false, series_every: 0, checkpoint_every: 0}}
"""


def run(problem: Path, ranks: int, out: Path, device: str
        ) -> tuple[dict, list[float], list[float]]:
    cmd = [sys.executable, "-m", "femopt", "run", str(problem), "--out", str(out),
           "--quiet", "--force", "--device", device]
    if ranks > 0:
        cmd += ["--ranks", str(ranks)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return summary, [float(r["seconds"]) for r in rows], [float(r["objective"]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="96x32x32")
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--ranks", default="1,2", help="rank counts (0: the one-process path)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args()
    rtol = 1e-10 if args.device == "cpu" else 1e-6
    nx, ny, nz = (int(v) for v in args.shape.split("x"))
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"# {date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"cantilever {args.shape} ({nx * ny * nz:,} hex8 cells), {args.iterations} "
          f"iterations, --device {args.device}")
    print(f"# load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| ranks | s / iteration (median after the first) | first (s) | wall (s) |"
          " overhead | iterations | objective | peak RSS per rank (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "cantilever.yaml"
        problem.write_text(PROBLEM.format(nx=nx, ny=ny, nz=nz, iterations=args.iterations))
        reference, base = None, None
        for n in ranks:
            summary, seconds, objectives = run(problem, n, Path(tmp) / f"r{n}", args.device)
            rest = sorted(seconds[1:]) or seconds
            median = rest[len(rest) // 2]
            base = median if base is None else base
            rss = " / ".join(f"{v:.0f}" for v in summary.get("peak_rss_mib", []))
            print(f"| {n} | {median:.3f} | {seconds[0]:.2f} | {summary['wall_time']:.1f} | "
                  f"{median / base:.2f} | {summary['iterations']} | "
                  f"{summary['objective']:.10g} | {rss} |")
            if reference is None:
                reference = objectives
            elif len(objectives) != len(reference) or any(
                    abs(a - b) > rtol * abs(a) for a, b in zip(reference, objectives)):
                raise SystemExit(f"{n} ranks differ from {ranks[0]}: {objectives} "
                                 f"against {reference}")


if __name__ == "__main__":
    main()
