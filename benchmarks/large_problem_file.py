"""Validation time of a large problem file: a 500x400 grid with one point load on each of
200,000 nodes (about 12 MB of YAML), through `femopt validate` as a user runs it.
Prints the wall and CPU seconds and the peak memory of the process.

    python benchmarks/large_problem_file.py [--loads N]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def problem_text(n_loads: int, nx: int = 500, ny: int = 400) -> str:
    """A problem file with ``n_loads`` point loads on the nodes of an nx x ny grid."""
    lines = ["name: many_loads",
             f"mesh: {{type: structured, shape: [{nx}, {ny}], size: [{nx}.0, {ny}.0]}}",
             "physics: {type: linear_elasticity}",
             "supports:", "  - region: {face: x_min}", "loads:"]
    points = ((i, j) for j in range(1, ny + 1) for i in range(1, nx + 1))
    for _, (i, j) in zip(range(n_loads), points):
        lines.append(f"  - {{region: {{point: [{i}.0, {j}.0]}}, force: [0.0, -0.001]}}")
    lines += ["objective: {type: compliance}", "constraints:",
              "  - {type: volume, max: 0.5}", "optimizer: {type: oc, max_iter: 1}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many_loads.yaml"
        path.write_text(problem_text(args.loads), encoding="utf-8")
        size = path.stat().st_size
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "femopt", "validate", str(path)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print("| loads | file | exit | wall s | CPU s | peak MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.loads} | {size / 1e6:.1f} MB | {proc.returncode} | {wall:.2f} | {cpu:.2f} "
          f"| {after.ru_maxrss / 1024:.0f} |")
    if proc.returncode:
        print(proc.stderr[-2000:])


if __name__ == "__main__":
    main()
