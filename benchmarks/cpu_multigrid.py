"""Multigrid against the direct solver on the CPU: the 3D cantilever, one solve per design.

The system is the grid cantilever (clamped at x = 0, loads on the bottom edge of the free
end) at a SIMP design of contrast 1e-9 (the truss design of
:func:`femopt.mesh.grid_cantilever.truss_design`, p = 3). "Solve" is what the model pays per
design: assembling/factorizing (direct) or building the hierarchy's operators (multigrid),
then one solve to rtol 1e-8 (multigrid) or to round-off (direct). The multigrid's first
call also builds its fixed hierarchy (patterns, scatter maps), reported apart.

    python benchmarks/cpu_multigrid.py [--sizes 60x20x4,120x40x8,160x80x40]
        [--direct-max-dofs 200000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
import time
from datetime import date
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # grid fixtures


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("x"))


def run(shape, direct_max_dofs):
    from femopt.assembly.sparse import FixedPatternAssembler
    from grid_cantilever import grid_cantilever, truss_design
    from femopt.solvers import DirectSolver
    from femopt.solvers.multigrid import MultigridOptions, MultigridSolver

    case = grid_cantilever(shape)
    lay = case.layout
    scale = 1e-9 + truss_design(shape) ** 3
    fixed = lay.to_dofs(case.fixed)
    free = np.flatnonzero(~fixed)
    with_direct = free.size <= direct_max_dofs
    t0 = time.perf_counter()
    # the multigrid only reads ``free`` from the assembler; the sparse pattern (np.unique
    # over 576 entries per cell) is built only where the direct solver runs
    asm = (FixedPatternAssembler(lay.cell_dofs(), lay.n_dofs, free) if with_direct
           else SimpleNamespace(free=free, restrict=lambda v: v[free]))
    pattern_s = time.perf_counter() - t0
    f = asm.restrict(lay.to_dofs(case.load))
    row = {"shape": shape, "cells": lay.n_cells, "dofs": asm.free.size, "pattern": pattern_s}
    mg = MultigridSolver(MultigridOptions(rtol=1e-8), lay)
    t0 = time.perf_counter()
    mg.update_operator(scale, asm, case.ke)
    row["mg_first_setup"] = time.perf_counter() - t0
    times = []
    for _ in range(2):  # the second design update reuses the hierarchy
        t0 = time.perf_counter()
        mg.update_operator(scale, asm, case.ke)
        t1 = time.perf_counter()
        u_mg = mg.solve(f)
        t2 = time.perf_counter()
        times.append((t1 - t0, t2 - t1))
    row["mg_setup"], row["mg_solve"] = times[-1]
    row["mg_its"] = mg.last.iterations
    row["mg_levels"] = len(mg.levels)
    row["direct"] = None
    if with_direct:
        d = DirectSolver()
        t0 = time.perf_counter()
        d.update_operator(scale, asm, case.ke)
        t1 = time.perf_counter()
        u_d = d.solve(f)
        t2 = time.perf_counter()
        row["direct"] = (t1 - t0, t2 - t1)
        row["diff"] = float(np.abs(u_mg - u_d).max() / np.abs(u_d).max())
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="60x20x4,120x40x8,160x80x40")
    ap.add_argument("--direct-max-dofs", type=int, default=200_000,
                    help="skip the direct solver above this many free dofs")
    args = ap.parse_args(argv)
    print(f"# 3D cantilever, one solve per design, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores, {date.today().isoformat()}")
    print("| grid | cells | free dofs | MG levels | MG set-up + solve (s) | CG its "
          "| MG hierarchy, once (s) | direct factorize + solve (s) | speed-up | max diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for text in args.sizes.split(","):
        r = run(parse_shape(text), args.direct_max_dofs)
        mg = r["mg_setup"] + r["mg_solve"]
        if r["direct"] is None:
            direct, speed, diff = "not run (too large)", "", ""
        else:
            dt = sum(r["direct"])
            direct = f"{r['direct'][0]:.2f} + {r['direct'][1]:.2f}"
            speed, diff = f"{dt / mg:.1f}x", f"{r['diff']:.1e}"
        print(f"| {text} | {r['cells']} | {r['dofs']} | {r['mg_levels']} | "
              f"{r['mg_setup']:.2f} + {r['mg_solve']:.2f} | {r['mg_its']} | "
              f"{r['mg_first_setup'] + r['pattern']:.2f} | {direct} | {speed} | {diff} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
