"""Export speed: a 256x128x128 density field (4.2M cells) to STL and 3MF, and a 2D
1024x512 field to DXF, timed stage by stage. Prints a Markdown table.

    python benchmarks/export_speed.py [--smooth N]

The field is a synthetic 3D truss-like part (smooth tubes between random nodes, so the
surface has the size and genus of an optimized design), not a run: an optimization of
this size is the GPU's job, the export is the same either way.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from femopt.io.cad import CadOptions, build_part
from femopt.io.results import DesignResult
from femopt.mesh.structured import structured_grid


def truss_field(shape: tuple[int, ...], n_bars: int = 40, seed: int = 0) -> np.ndarray:
    """Cell densities (x fastest) of bars of radius ~3 cells between random points,
    with a smooth 0-1 transition a cell and a half wide."""
    rng = np.random.default_rng(seed)
    axes = [np.arange(n) + 0.5 for n in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    dist = np.full(shape, np.inf)
    pts = rng.uniform(0, 1, size=(n_bars, 2, len(shape))) * np.array(shape)
    for a, b in pts:
        ab = b - a
        t = np.clip(((grid - a) @ ab) / (ab @ ab), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(grid - a - t[..., None] * ab, axis=-1))
    rho = 1.0 / (1.0 + np.exp((dist - 3.0) / 0.5))
    return rho.transpose(*range(len(shape))[::-1]).ravel()  # x fastest


def time_export(shape, fmt: str, smooth: int) -> dict:
    mesh = structured_grid(shape, [float(n) for n in shape])
    t0 = time.perf_counter()
    rho = truss_field(tuple(shape))
    t_field = time.perf_counter() - t0
    result = DesignResult(mesh, {"density": rho}, {}, "mm", None, 1.0)
    t0 = time.perf_counter()
    part = build_part(result, CadOptions(smooth=smooth), extrude_2d=fmt != "dxf")
    t_part = time.perf_counter() - t0
    from femopt.plugins.manager import get_registry

    exporter = get_registry().create("exporter", fmt, CadOptions(smooth=smooth))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        exporter.write(part, Path(d) / f"part.{fmt}")
        t_write = time.perf_counter() - t0
        size = (Path(d) / f"part.{fmt}").stat().st_size
    return {"shape": "x".join(map(str, shape)), "cells": int(np.prod(shape)), "format": fmt,
            "faces": len(part.surface.faces) if part.surface is not None else 0,
            "field": t_field, "part": t_part, "write": t_write, "mb": size / 1e6,
            "volume_error": part.volume / part.thresholded_volume - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smooth", type=int, default=10)
    args = ap.parse_args()
    rows = [time_export((256, 128, 128), "stl", args.smooth),
            time_export((256, 128, 128), "3mf", args.smooth),
            time_export((1024, 512), "dxf", args.smooth)]
    print("| grid | cells | format | triangles | contour + smooth + check (s) | write (s) "
          "| total (s) | file (MB) | volume vs thresholded |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['shape']} | {r['cells']:,} | {r['format']} | {r['faces']:,} | "
              f"{r['part']:.2f} | {r['write']:.2f} | {r['part'] + r['write']:.2f} | "
              f"{r['mb']:.1f} | {100 * r['volume_error']:+.2f}% |")


if __name__ == "__main__":
    main()
