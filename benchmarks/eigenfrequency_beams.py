"""The shipped eigenfrequency problems through `femopt run`, against Du and Olhoff.

Runs ``problems/clamped_beam_frequency.yaml`` (Du and Olhoff 2007, Struct Multidisc Optim
34:91-110, section 3: the clamped-clamped 8 x 1 beam, published w1 = 146.1 rad/s at the
uniform start and 456.4 at the optimum) and ``problems/clamped_beam_mass_frequency.yaml``
(the same beam with a central mass, no published figure) with the command a user types,
one after the other, and prints a table: the first iterate's objective, the final
frequencies from summary.json, the gap to the published optimum, iterations, wall time
and seconds per iteration. ``--coarse`` runs them on 120 x 15 cells with the filter
radius 0.1 (what CI tests).

    python benchmarks/eigenfrequency_beams.py [--coarse]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"clamped_beam_frequency": 456.4, "clamped_beam_mass_frequency": None}


def run(name: str, coarse: bool, work: Path) -> dict:
    path = ROOT / "problems" / f"{name}.yaml"
    if coarse:
        data = yaml.safe_load(path.read_text())
        data["mesh"]["shape"] = [120, 15]
        data["filters"][0]["radius"] = 0.1
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
    out = work / name
    subprocess.run([sys.executable, "-m", "femopt.cli", "run", str(path), "--out", str(out),
                    "--force"], check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "history.csv", newline="") as f:
        first = float(next(csv.DictReader(f))["objective"])
    return {"name": name, "cells": summary["n_cells"], "first": first,
            "w": summary["frequencies"]["modes"], "iterations": summary["iterations"],
            "wall": summary["wall_time"], "per_iter": summary["seconds_per_iteration"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coarse", action="store_true", help="120 x 15 cells")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| problem | cells | objective, first iterate | w1, w2, w3 (rad/s) | published w1 "
          "| gap | iterations | wall (s) | s / iteration |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, published in PUBLISHED.items():
            r = run(name, args.coarse, Path(tmp))
            gap = f"{r['w'][0] / published - 1:+.1%}" if published else "-"
            w = ", ".join(f"{v:.1f}" for v in r["w"])
            print(f"| {name} | {r['cells']} | {r['first']:.1f} | {w} | {published or '-'} "
                  f"| {gap} | {r['iterations']} | {r['wall']:.1f} | {r['per_iter']:.3f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
