"""`femopt run --device gpu` on the 3D cantilever at production sizes, as a user runs it.

Writes a problem file per size (the cantilever of problems/cantilever_3d.yaml scaled to
NX x NY x NZ cells with the load line at the free end's bottom edge, density filter of
radius 1.5 cells, volume 0.3, OC, the multigrid solver at rtol 1e-5), runs the command
line in a subprocess and reads history.csv (seconds per iteration) and summary.json.
"median" and "mean" are over the iterations after the first: a short run's median
flatters the path, since later designs take more CG iterations (at 512x256x256 on an
H100, 0.486 s over iterations 2 to 6 but 0.535 s over 2 to 30): for the goal's
figure, pass ``--iterations 30``.
"set-up" is the wall time before the first iteration (reading the problem, building the
grid and the model on the host, uploading); "output" is what follows the last one
(design.vtu of the final design, or design.vti with ``--format vti``). "host peak" is
the command's peak resident set size (sizes run in increasing order: the largest child
process so far is this one). "GPU pool" is summary.json's ``gpu_pool_bytes``, the high-water
mark of femopt's GPU memory pools, in bytes per cell; "precision" the grid path's Krylov
precision the run reports (and the float32 solves it redid in float64). Pictures, the
time series and checkpoints are off.

``FEMOPT_GPU_ALLOCATOR=async`` in the environment runs the command line with CUDA's
stream-ordered allocator (its "GPU pool" the CUDA pool's reserved high-water mark).
``--precision mixed|double`` sets the multigrid's ``krylov`` option; ``--solver-section
none`` writes no ``solver:`` section at all (the user's defaults: the GPU path's own
multigrid, rtol 1e-6 and 10 Lanczos steps), ``--solver-section default`` the one above
(rtol 1e-5).

    python benchmarks/gpu_cli_run.py [--sizes 128x64x64,256x128x128,512x256x256]
        [--iterations 6] [--device gpu] [--precision mixed|double]
        [--solver-section default|none] [--rtol 1e-5] [--solver-option KEY=VALUE ...]
        [--keep-history DIR] [--format vtu|vti] [--read-design]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml


def problem(shape: tuple[int, int, int], iterations: int, precision: str | None = None,
            solver_section: str = "default", rtol: float = 1.0e-5,
            solver_options: dict | None = None, fmt: str = "vtu") -> dict:
    nx, ny, nz = shape
    data = {
        "name": f"cantilever_{nx}x{ny}x{nz}",
        "mesh": {"type": "structured", "shape": list(shape), "size": [float(nx), float(ny), float(nz)]},
        "physics": {"type": "linear_elasticity", "E": 1.0, "nu": 0.3},
        "supports": [{"region": {"face": "x_min"}}],
        "loads": [{"region": {"box": {"min": [float(nx), 0.0, 0.0], "max": [float(nx), 0.0, float(nz)]}},
                   "force": [0.0, -1.0, 0.0], "distribute": "total"}],
        "design": {"interpolation": {"type": "simp", "penalty": 3.0, "min": 1.0e-9}},
        "filters": [{"type": "density", "radius": 1.5}],
        "objective": {"type": "compliance"},
        "constraints": [{"type": "volume", "max": 0.3}],
        "optimizer": {"type": "oc", "move": 0.2, "tol": 1.0e-9, "max_iter": iterations},
        "solver": {"type": "multigrid", "rtol": 1.0e-5},
        "output": {"picture": False, "series_every": 0, "checkpoint_every": 0,
                   "formats": [fmt]},
    }
    data["solver"]["rtol"] = rtol
    if precision is not None:
        data["solver"]["krylov"] = precision
    data["solver"].update(solver_options or {})
    if solver_section == "none":
        del data["solver"]
    return data


def run(shape, iterations: int, device: str, work: Path, profile: bool = False,
        precision: str | None = None, solver_section: str = "default",
        rtol: float = 1.0e-5, solver_options: dict | None = None, fmt: str = "vtu") -> dict:
    name = "x".join(map(str, shape))
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(problem(shape, iterations, precision, solver_section,
                                           rtol, solver_options, fmt)))
    out = work / name
    t0 = time.perf_counter()
    prof = ["-m", "cProfile", "-o", str(work / f"{name}.prof")] if profile else []
    # run from the work folder: ``-m`` puts the working directory first on the path, and
    # from the project root that is the tree's femopt, not the one PYTHONPATH names
    proc = subprocess.run([sys.executable, *prof, "-m", "femopt", "run", str(path), "--device",
                           device, "--out", str(out)], capture_output=True, text=True,
                          cwd=work, env=child_env())
    wall = time.perf_counter() - t0
    if profile:
        import pstats

        pstats.Stats(str(work / f"{name}.prof")).sort_stats("cumtime").print_stats(40)
    if proc.returncode != 0:
        return {"shape": name, "error": (proc.stdout + proc.stderr).strip().splitlines()[-1:]}
    with open(out / "history.csv", newline="") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    summary = json.loads((out / "summary.json").read_text())
    # the largest child so far: sizes run in increasing order, so this run's (kB on Linux)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"shape": name, "cells": shape[0] * shape[1] * shape[2], "wall": wall,
            "host_peak": peak,
            "run_wall": summary["wall_time"], "first": seconds[0],
            "median": statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan"),
            "mean": statistics.mean(seconds[1:]) if len(seconds) > 1 else float("nan"),
            "iterations": len(seconds), "objective": summary.get("objective"),
            "setup_and_output": wall - sum(seconds),
            "pool": summary.get("gpu_pool_bytes"),
            "precision": summary.get("solver_precision"),
            "fallbacks": summary.get("precision_fallbacks")}


def child_env() -> dict:
    """This process's environment with PYTHONPATH's entries made absolute (the command
    runs in its work folder, where a relative entry would name nothing)."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p)
                                            for p in env["PYTHONPATH"].split(os.pathsep))
    return env


def femopt_origin(work: Path) -> str:
    """Where the command's ``femopt`` comes from, seen as the runs see it."""
    proc = subprocess.run([sys.executable, "-c", "import femopt; print(femopt.__file__)"],
                          capture_output=True, text=True, cwd=work, env=child_env())
    return proc.stdout.strip() or proc.stderr.strip().splitlines()[-1]


def read_design(path: Path, cells: int) -> str:
    """The reading of a design file, as a user's script would read it: design.vtu by
    meshio, design.vti by femopt's reader (meshio reads no image data)."""
    if path.suffix == ".vti":
        reader = "femopt.io.vti.read_vti"
        code = ("import sys, time, math; from femopt.io.vti import read_vti; "
                "t = time.perf_counter(); m = read_vti(sys.argv[1]); "
                "print(math.prod(m.shape), m.cell_data['density'].shape[0], "
                "round(time.perf_counter() - t, 1))")
    else:
        reader = "meshio"
        code = ("import sys, time, meshio; t = time.perf_counter(); m = meshio.read(sys.argv[1]); "
                "print(sum(len(c.data) for c in m.cells), m.cell_data['density'][0].shape[0], "
                "round(time.perf_counter() - t, 1))")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, env=child_env())
    if proc.returncode != 0:
        return f"{path.name} ({path.stat().st_size / 2**30:.2f} GiB): {reader} failed: " + \
            (proc.stdout + proc.stderr).strip().splitlines()[-1]
    n, n_density, seconds = proc.stdout.split()
    ok = int(n) == cells and int(n_density) == cells
    return (f"{path.name} {path.stat().st_size / 2**30:.2f} GiB read by {reader} in {seconds} "
            f"s: {n} cells, {n_density} densities ({'complete' if ok else 'INCOMPLETE'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128x64x64,256x128x128,512x256x256")
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--profile", action="store_true", help="print where each run's time goes")
    ap.add_argument("--read-design", action="store_true",
                    help="read each design file back (design.vtu with meshio, design.vti "
                         "with femopt's reader; in a process of its own) and print its "
                         "size, cell count and reading time")
    ap.add_argument("--format", choices=["vtu", "vti"], default="vtu",
                    help="output.formats of the runs: the design as vtu or, without "
                         "points and cells, as vti (a fraction of the disk space)")
    ap.add_argument("--precision", choices=["mixed", "double"], default=None,
                    help="the multigrid's krylov option (default: not set, i.e. auto)")
    ap.add_argument("--solver-section", choices=["default", "none"], default="default",
                    help="none: no solver: section in the problem file (user defaults)")
    ap.add_argument("--rtol", type=float, default=1.0e-5)
    ap.add_argument("--keep-history", type=Path, default=None, metavar="DIR",
                    help="copy each run's history.csv to DIR/history-SHAPE-PRECISION.csv "
                         "(to compare objective histories)")
    ap.add_argument("--solver-option", action="append", default=[], metavar="KEY=VALUE",
                    help="another multigrid option in the solver: section (repeatable; "
                         "the value read as YAML), e.g. coarse_operator=hybrid")
    args = ap.parse_args()
    if (args.precision or args.solver_option) and args.solver_section == "none":
        ap.error("--precision and --solver-option need a solver: section "
                 "(--solver-section default)")
    options = {}
    for item in args.solver_option:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            ap.error(f"--solver-option takes KEY=VALUE, got {item!r}")
        if key in ("type", "rtol", "krylov"):
            ap.error(f"--solver-option {key}: use --rtol or --precision (type is multigrid)")
        options[key] = yaml.safe_load(value)
    solver = ("no solver: section" if args.solver_section == "none" else
              f"multigrid rtol {args.rtol:g}, krylov {args.precision or 'auto'}"
              + "".join(f", {k} {v}" for k, v in options.items()))
    print(f"`femopt run --device {args.device}`, 3D cantilever, {date.today()}, "
          f"{args.iterations} iterations, {solver}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"femopt from {femopt_origin(Path(tmp))}\n")
    print("| cells | shape | first iteration (s) | median iteration (s) | mean iteration (s) "
          "| process wall (s) "
          "| set-up + output (s) | host peak (GB) | host bytes per cell "
          "| GPU pool (B/cell) | precision (fallbacks) | final objective |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.sizes.split(","):
            shape = tuple(int(v) for v in text.split("x"))
            r = run(shape, args.iterations, args.device, Path(tmp), args.profile,
                    args.precision, args.solver_section, args.rtol, options, args.format)
            if "error" in r:
                print(f"| | {r['shape']} | failed: {r['error']} | | | | | | | | | |",
                      flush=True)
                continue
            pool = "n/a" if r["pool"] is None else f"{r['pool'] / r['cells']:.0f}"
            print(f"| {r['cells'] / 1e6:.1f}M | {r['shape']} | {r['first']:.2f} | {r['median']:.3f} "
                  f"| {r['mean']:.3f} "
                  f"| {r['wall']:.1f} | {r['setup_and_output']:.1f} | {r['host_peak'] / 1e9:.1f} "
                  f"| {r['host_peak'] / r['cells']:.0f} | {pool} "
                  f"| {r['precision']} ({r['fallbacks']}) | {r['objective']} |", flush=True)
            if args.keep_history is not None:
                args.keep_history.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / r["shape"] / "history.csv", args.keep_history
                                / f"history-{r['shape']}-{args.precision or 'auto'}.csv")
            if args.read_design:
                print(read_design(Path(tmp) / r["shape"] / f"design.{args.format}",
                                  r["cells"]), flush=True)


if __name__ == "__main__":
    main()
