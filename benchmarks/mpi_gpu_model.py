"""A model (not a measurement) of the seconds per design iteration of a distributed run
on 8 GPUs of one H100 NVLink node, from the one-GPU time and counted communication.

What it takes:

- the measured one-GPU seconds per design iteration at a reference grid (default: the
  H100 figure of docs/benchmarks.md, 512x256x256 at 1.034 s with the defaults);
- the communication of one design iteration, counted: a distributed run on the CPU
  (``femopt run --ranks 2`` of the 3D cantilever at a small grid, ``--count-shape``;
  or ``--counts`` a summary.json of such a run) reports rank 0's halo exchanges per
  multigrid level, reductions and gathers per design iteration (summary.json,
  ``communication``). The counted run's exchanges of a level are split into their part
  per CG iteration, 1 + 2 s (the CG product and a V-cycle's s pre-, 1 residual and
  s - 1 post-smoothing products; the restricted residual's exchange on the coarser
  levels instead of the CG product), and the rest (smoother set-up: the diagonal, the
  Lanczos products; the warm start); at the target grid the first is multiplied by the
  CG iterations (``--cg``, default the counted run's) and the second kept; levels the
  small grid lacks take its coarsest cut level's rest. Reductions likewise (2 per CG
  iteration, 1 + 2 m Lanczos sums for all cut levels together, the rest as counted). Message sizes
  are the target's: a node layer of the level (the slab's face) times the counted bytes
  per value, a cell layer for the filter's ghosts (its reach) and the Galerkin matrices;
- NCCL's figures for an 8-GPU H100 NVLink node (sources in docs/benchmarks.md): the
  latency of a send/recv and of a small allReduce, the effective NVLink bandwidth of
  send/recv and allGather; an MPI host collective's latency (the flags and maxima) is an
  assumption. A device allGather asks no row counts: every rank knows them from the
  slabs' bounds.

Per rank and design iteration it prints: compute (the one-GPU time at the cells a rank
keeps, ghost layer included, plus the replicated coarse levels every rank computes whole;
below the reference size as cells^0.84, which the one-GPU runs at 4.2M and 33.6M cells
gave, above it linear), halo time (an interior rank: each exchange two send/recv pairs, in sequence, not
overlapped with compute -- the code does not overlap them), reduction time (each device
sum one allReduce, each host flag or maximum one MPI collective) and the coarse levels'
allGathers, their total and the speed-up over one GPU (the one-GPU time scaled linearly
in cells; grids that do not fit one GPU get that extrapolation too).

    python benchmarks/mpi_gpu_model.py [--seconds 1.034] [--reference 512x256x256]
        [--grids 512x256x256,1024x512x512,2048x1024x512] [--ranks 8]
        [--count-shape 64x16x16 | --counts summary.json] [--cg N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.errors import InputError
from femopt.parallel.partition import RankPlan, grid_plan
from femopt.solvers.multigrid_levels import MultigridOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mpi_cpu  # noqa: E402  (the benchmark cantilever)

# NCCL on 8 H100 SXM on NVSwitch (docs/benchmarks.md cites each)
SENDRECV_US = 3.7  # sendrecv_perf, small messages, NVLink Hopper (NVIDIA/nccl#1984)
ALLREDUCE_US = 15.0  # NCCL's tuning model, ring LL on 8 NVLink ranks (NVIDIA/nccl#1334)
NVLINK_GBS = 370.0  # NCCL's effective NVLink bandwidth, send/recv and allGather busBw
MPI_US = 5.0  # an intra-node MPI collective of a few bytes (assumed)
# reductions per CG iteration (SlabMultigrid._pcg: p.q with r.q and q.q, then r.z with z.q)
CG_SUMS = 2
BYTES_PER_CELL = 575  # the one-GPU path's pool high-water mark (docs/benchmarks.md)
H100_BYTES = 80e9

# the benchmark cantilever of mpi_cpu.py (the multigrid's defaults)
PROBLEM = mpi_cpu.PROBLEM.replace("cantilever_mpi_benchmark", "cantilever_counts")

K = 3  # dofs per node (hex8 elasticity)
ND = 24  # dofs per cell
REACH = 2  # cells the density filter of radius 1.5 reaches


def shape_of(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("x"))


def counted_run(shape: tuple[int, ...], iterations: int) -> dict:
    """summary.json of the cantilever at ``shape`` on two CPU ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "cantilever.yaml"
        nx, ny, nz = shape
        problem.write_text(PROBLEM.format(nx=nx, ny=ny, nz=nz, iterations=iterations))
        return mpi_cpu.run(problem, 2, Path(tmp) / "out", "cpu")[0]


def hierarchy(shape: tuple[int, ...], ranks: int) -> RankPlan:
    """The cantilever's grid ``shape`` on ``ranks`` ranks as a run plans it
    (:func:`femopt.parallel.partition.grid_plan`: the multigrid's defaults, the density
    filter's reach), without building the model."""
    try:
        return grid_plan(shape, K, (REACH,) * 3, MultigridOptions(), ranks)
    except InputError as exc:
        raise SystemExit(str(exc)) from None


def face_nodes(lay: GridLayout) -> int:
    return int(np.prod(lay.node_shape[:-1]))


def face_cells(lay: GridLayout) -> int:
    return int(np.prod(lay.shape[:-1]))


class Counts:
    """A counted run's design iterations after the first (its steady state), split into
    parts per CG iteration and per design iteration (see the module docstring)."""

    def __init__(self, summary: dict, count_shape: tuple[int, ...]):
        comm = summary["communication"]
        steps, cg = comm["per_iteration"][1:], comm["cg_iterations"][1:]
        if not steps:
            raise SystemExit("the counted run needs two design iterations or more")
        o = MultigridOptions()
        self.per_cg = 1 + 2 * o.smoothing_steps
        self.lanczos = 1 + 2 * o.eig_iterations
        self.cg = float(np.mean(cg))
        counted = hierarchy(count_shape, 2)
        lays, cut = counted.levels, counted.distributed
        self.cut = cut

        def mean(section: str, label: str, key: str) -> float:
            return float(np.mean([s[section].get(label, {}).get(key, 0) for s in steps]))

        # per level: exchanges per design iteration less the CG part (the set-up's)
        self.rest = [mean("halo", f"level {i}", "exchanges") - self.per_cg * self.cg
                     for i in range(cut)]
        msgs = mean("halo", "level 0", "messages")
        self.bytes_per_value = mean("halo", "level 0", "bytes") / (msgs * face_nodes(
            lays[0]) * K)
        self.filter = mean("halo", "filter", "exchanges")
        cg_calls = mean("reductions", "cg", "calls")
        self.cg_rest = cg_calls - CG_SUMS * self.cg
        self.sums_rest = sum(mean("reductions", label, "calls")
                             for label in ("functions", "optimizer", "other"))
        self.lanczos_counted = mean("reductions", "lanczos", "calls")
        self.host = sum(mean("reductions", label, "calls") for label in ("max", "any",
                                                                          "bcast"))
        self.steps, self.cg_list = steps, cg


def one_gpu_seconds(cells: float, t1: float, cells_ref: int, exponent: float) -> float:
    """One GPU's seconds per design iteration at ``cells``: ``t1`` at ``cells_ref``,
    linear in the cells above it, as cells^exponent below it (a GPU less busy)."""
    x = cells / cells_ref
    return t1 * (x if x >= 1.0 else x ** exponent)


def model(shape: tuple[int, ...], ranks: int, c: Counts, cg: float, t1: float,
          cells_ref: int, exponent: float, net: dict) -> dict:
    """The seconds per design iteration on ``ranks`` GPUs at ``shape``."""
    rank = hierarchy(shape, ranks)
    orient, lays, bounds, cut = rank.orient, rank.levels, rank.bounds, rank.distributed
    cells = int(np.prod(shape))
    n_layers = lays[0].shape[-1]
    own = max(b - a for a, b in zip(bounds, bounds[1:]))
    one_gpu = one_gpu_seconds(cells, t1, cells_ref, exponent)
    level_cells = [int(np.prod(lay.shape)) for lay in lays]
    replicated = sum(level_cells[cut:]) / sum(level_cells)
    # a rank: its kept cells (owned and the ghost layer) of the cut levels, and the
    # replicated coarse levels whole
    share = (own + 1) / n_layers * (1 - replicated) + replicated
    compute = one_gpu_seconds(cells * share, t1, cells_ref, exponent)

    def p2p(nbytes: float) -> float:
        return net["sendrecv_us"] * 1e-6 + nbytes / (net["nvlink_gbs"] * 1e9)

    bpv = c.bytes_per_value
    halo = 0.0
    for i in range(cut):  # a level the counted grid lacks: its deepest cut level's rest
        exchanges = c.rest[min(i, len(c.rest) - 1)] + c.per_cg * cg
        halo += exchanges * 2 * p2p(face_nodes(lays[i]) * K * bpv)
    halo += c.filter * 2 * p2p(REACH * face_cells(lays[0]) * 8)
    halo += p2p(face_cells(lays[0]) * 8)  # the design's scale factors, one way
    for i in range(1, cut):  # Galerkin cell matrices of the cut coarse levels, one way
        halo += p2p(face_cells(lays[i]) * ND * ND * bpv)
    # the Lanczos estimates of all cut levels run in step: one sum per step for all
    sums = CG_SUMS * cg + c.cg_rest + c.sums_rest + c.lanczos
    reductions = sums * net["allreduce_us"] * 1e-6 + c.host * net["mpi_us"] * 1e-6
    gathers = 0.0
    if cut < len(lays):  # into the first replicated level: per V-cycle and its matrices
        coarse = lays[cut]
        per = net["allreduce_us"] * 1e-6
        vec = coarse.n_dofs * bpv
        mats = int(np.prod(coarse.shape)) * ND * ND * bpv
        share = (ranks - 1) / ranks / (net["nvlink_gbs"] * 1e9)
        gathers = cg * (per + vec * share) + per + mats * share
    total = compute + halo + reductions + gathers
    return {"grid": "x".join(map(str, shape)), "cells": cells, "axis": "xyz"[orient.axis],
            "levels": len(lays), "cut": cut, "own_layers": own,
            "bytes_per_rank": (own + 1) * face_cells(lays[0]) * BYTES_PER_CELL,
            "compute": compute, "halo": halo, "reductions": reductions,
            "gathers": gathers, "total": total, "one_gpu": one_gpu,
            "speedup": one_gpu / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.034,
                    help="one-GPU seconds per design iteration at --reference")
    ap.add_argument("--reference", default="512x256x256")
    ap.add_argument("--exponent", type=float, default=0.84,
                    help="below --reference a GPU's time goes as cells^exponent (0.84: "
                    "0.146 s at 256x128x128 against 0.833 s at 512x256x256)")
    ap.add_argument("--grids", default="512x256x256,1024x512x512,2048x1024x512")
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--count-shape", default="64x16x16")
    ap.add_argument("--count-iterations", type=int, default=3)
    ap.add_argument("--counts", help="summary.json of a counted run of the cantilever "
                    "(--count-shape its grid) instead of running one")
    ap.add_argument("--cg", type=float, help="CG iterations per design iteration at the "
                    "target grids (default: the counted run's)")
    ap.add_argument("--sendrecv-us", type=float, default=SENDRECV_US)
    ap.add_argument("--allreduce-us", type=float, default=ALLREDUCE_US)
    ap.add_argument("--nvlink-gbs", type=float, default=NVLINK_GBS)
    ap.add_argument("--mpi-us", type=float, default=MPI_US)
    args = ap.parse_args()
    count_shape = shape_of(args.count_shape)
    summary = (json.loads(Path(args.counts).read_text()) if args.counts
               else counted_run(count_shape, args.count_iterations))
    c = Counts(summary, count_shape)
    cg = args.cg if args.cg is not None else c.cg
    net = {"sendrecv_us": args.sendrecv_us, "allreduce_us": args.allreduce_us,
           "nvlink_gbs": args.nvlink_gbs, "mpi_us": args.mpi_us}
    print(f"# a model, not a measurement; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} while counting")
    print(f"# counted: cantilever {args.count_shape} on 2 CPU ranks, design iterations 2 "
          f"to {len(c.steps) + 1}: CG iterations {c.cg_list}; per design iteration "
          f"(mean) level exchanges besides CG's {[round(r, 1) for r in c.rest]}, filter "
          f"{c.filter:g}, CG reductions besides {CG_SUMS} per CG iteration "
          f"{c.cg_rest:g}, other device sums {c.sums_rest:g}, Lanczos sums {c.lanczos_counted:g} "
          f"({c.cut} cut levels), host collectives {c.host:g}, {c.bytes_per_value:g} "
          f"bytes a value")
    print(f"# one GPU: {args.seconds} s at {args.reference}, as cells^{args.exponent} "
          f"below it, linear above; {args.ranks} GPUs; CG "
          f"iterations {cg:g}; send/recv {net['sendrecv_us']} us, allReduce "
          f"{net['allreduce_us']} us, NVLink {net['nvlink_gbs']} GB/s, MPI "
          f"{net['mpi_us']} us")
    print("| grid | cells | cut axis / levels cut of | layers per rank | GB per GPU "
          "(at 575 B/cell) | compute (s) | halo (s) | reductions (s) | coarse allGathers "
          "(s) | total (s) | one GPU (s, linear) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    cells_ref = int(np.prod(shape_of(args.reference)))
    for g in args.grids.split(","):
        r = model(shape_of(g), args.ranks, c, cg, args.seconds, cells_ref, args.exponent,
                  net)
        fits = "" if r["bytes_per_rank"] < H100_BYTES else " (over 80)"
        print(f"| {r['grid']} | {r['cells'] / 1e6:.1f}M | {r['axis']} / {r['cut']} of "
              f"{r['levels']} | {r['own_layers']} | {r['bytes_per_rank'] / 1e9:.1f}{fits} | "
              f"{r['compute']:.3f} | {r['halo']:.3f} | {r['reductions']:.3f} | "
              f"{r['gathers']:.4f} | {r['total']:.3f} | {r['one_gpu']:.2f} | "
              f"{r['speedup']:.2f} |")


if __name__ == "__main__":
    main()
