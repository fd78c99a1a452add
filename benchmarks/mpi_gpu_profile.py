"""Where a distributed GPU run's time goes: each rank's seconds inside the device
communicator's calls (halo exchanges, sums, gathers, host collectives), split for the
sums into the wait for the rank's own GPU and the rest (MPI, the peers).

Runs the 3D cantilever of ``benchmarks/mpi_cpu.py`` with ``mpiexec -n N femopt run
--device gpu`` for each rank count, the device communicator's methods wrapped by timers
(the only change: each sum first synchronizes the rank's stream, which its copy to the
host does anyway). Prints one table: per rank count and rank, seconds per design
iteration (history.csv's median after the first) and the seconds per design iteration
inside each kind of call (totals over the iterations after the first, divided by their
number), with the calls' counts per iteration.

    python benchmarks/mpi_gpu_profile.py [--shape 256x128x128] [--iterations 5]
                                         [--ranks 1,2] [--device gpu|cpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mpi_cpu import PROBLEM  # noqa: E402

from femopt.parallel.launch import mpiexec  # noqa: E402

# each rank: the device communicator's calls timed between the first and the last design
# iteration's report; ARGV: problem, out folder, iterations, device, ranks
WRAPPED = """\
import atexit, json, sys, time
import numpy as np
import femopt.parallel.comm_device as cd
import femopt.evaluation.model as fm
from femopt.parallel.comm import Comm
from femopt.cli import main

totals, counts, state = {}, {}, {"on": False, "reports": 0}

def add(kind, seconds):
    totals[kind] = totals.get(kind, 0.0) + seconds
    counts[kind] = counts.get(kind, 0) + 1

def timed(kind, fn):
    def call(self, *args, **kwargs):
        if not state["on"] or state.get("depth"):  # a call inside a timed call
            return fn(self, *args, **kwargs)
        state["depth"] = 1
        t = time.perf_counter()
        if kind == "sum" and self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()
            add("sum: own GPU", time.perf_counter() - t)
            t = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            state["depth"] = 0
            add(kind if kind != "sum" else "sum: the rest", time.perf_counter() - t)
    return call

# the CPU path's communicator (Comm) and the device one (DeviceComm, whose host calls go
# through a Comm: not counted twice)
for cls in (Comm, cd.DeviceComm):
    for kind, name in [("halo", "sendrecv"), ("halo", "exchange"), ("sum", "sum_layers"),
                       ("sum", "sum_groups"),
                       ("allgather", "allgather_rows"), ("gather", "gather_rows"),
                       ("host collective", "max"), ("host collective", "any"),
                       ("host collective", "bcast"), ("host collective", "gather"),
                       ("host collective", "barrier")]:
        setattr(cls, name, timed(kind, cls.__dict__[name]))

report = fm.Model.report
def reported(self, *args, **kwargs):
    state["reports"] += 1
    state["on"] = 1 <= state["reports"] < int(sys.argv[3])
    return report(self, *args, **kwargs)
fm.Model.report = reported

def dump():
    from femopt.parallel.comm import launched_rank
    Path = __import__("pathlib").Path
    Path(sys.argv[2]).mkdir(parents=True, exist_ok=True)
    (Path(sys.argv[2]) / f"profile-{launched_rank()}.json").write_text(
        json.dumps({"totals": totals, "counts": counts}))
atexit.register(dump)
sys.exit(main(["run", sys.argv[1], "--device", sys.argv[4], "--out", sys.argv[2], "--quiet",
               "--force", "--ranks", sys.argv[5]]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x128x128")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    args = ap.parse_args()
    nx, ny, nz = (int(v) for v in args.shape.split("x"))
    kinds = ["halo", "sum: own GPU", "sum: the rest", "allgather", "gather",
             "host collective"]
    print(f"`mpiexec -n N femopt run --device {args.device}`, 3D cantilever {args.shape}, "
          f"{args.iterations} iterations: seconds per design iteration inside the device "
          "communicator's calls (calls per iteration)\n")
    print("| ranks | rank | s / iteration | " + " | ".join(kinds) + " |")
    print("|---" * (3 + len(kinds)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "cantilever.yaml"
        problem.write_text(PROBLEM.format(nx=nx, ny=ny, nz=nz, iterations=args.iterations))
        for n in (int(r) for r in args.ranks.split(",")):
            out = Path(tmp) / f"ranks{n}"
            proc = subprocess.run([mpiexec(), "-n", str(n), sys.executable, "-c", WRAPPED,
                                   str(problem), str(out), str(args.iterations),
                                   args.device, str(n)],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{n} ranks failed:\n{proc.stderr}")
            with open(out / "history.csv", newline="") as fh:
                seconds = [float(r["seconds"]) for r in csv.DictReader(fh)][1:]
            per = statistics.median(seconds)
            for r in range(n):
                d = json.loads((out / f"profile-{r}.json").read_text())
                k = len(seconds)
                cells = [f"{d['totals'].get(c, 0.0) / k:.3f} ({d['counts'].get(c, 0) / k:.0f})"
                         for c in kinds]
                print(f"| {n} | {r} | {per:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
