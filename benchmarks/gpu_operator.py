"""Matrix-free hex8 operator apply on the GPU: time, bandwidth, flop rate, roofline.

3D elasticity (3 dofs per node, 24x24 element matrix) at about 1M, 10M and 33.5M cells in
float64 and float32, with the z-marching kernel (``femopt_assembly_hex8_apply_columns``,
K0 as literals), the Walsh kernel (``femopt_assembly_hex8_apply_walsh``: tiles of cells,
K0 u_e as butterflies and the 45 non-zeros of K0 in the Walsh basis of the corners) and
the per-node gather (``femopt_assembly_hex8_apply``, K0 in constant memory), side by side
in one run. Each size is timed with CUDA events over repeated applies after a warm-up, on
random data.

Traffic model (bytes per cell, nodes ~ cells): u read and y written (3 + 3 values), the
free-dof mask (3 bytes) and the cell's scale factor (1 value): 7 T + 3 bytes. Work:
2 * 24 * 24 = 1152 flops per cell. The roofline time is max(bytes / 3.0 TB/s, flops /
peak), with the peak from the device (SMs x clock x FP64 or FP32 FMA lanes x 2). The
work is this nominal 1152 flops for every kernel: the Walsh kernel executes about 170
floating-point instructions per cell instead of 576 FMAs, so its "of peak flops" and "of
roofline" can pass 100%.

    python benchmarks/gpu_operator.py [--sizes 1M,10M,33.5M] [--repeat 20]
        [--variants columns,walsh,walsh:2,gather]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from datetime import date
from itertools import product

import numpy as np

from femopt.backend import release_cached

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # grid fixtures

BANDWIDTH = 3.0e12  # device-to-device copy on an H100, shared/device/README.md
SIZES = {"1M": (128, 128, 64), "10M": (256, 256, 160), "33.5M": (512, 256, 256)}


def peak_flops(dtype) -> float:
    """FMA peak of the current device: SMs x clock x lanes per SM x 2."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    sms = props["multiProcessorCount"]
    clock = props["clockRate"] * 1e3  # kHz -> Hz
    major = props["major"]
    # FP32 lanes per SM: 128 from Ampere/Hopper on; FP64: 64 on the x100 parts (cc 8.0, 9.0)
    lanes = 128 if dtype == np.float32 else (64 if major in (8, 9) and props["minor"] == 0 else 2)
    return sms * clock * lanes * 2


def bench(shape, dtype, repeat, variant, min_blocks=None, rows=None):
    import cupy

    import femopt.assembly.matrix_free as mf
    from femopt.assembly.grid_layout import GridLayout
    from femopt.assembly.matrix_free import StructuredOperator
    from grid_cantilever import unit_cell_matrix

    lay = GridLayout(shape, 3)
    rng = cupy.random.default_rng(1)
    scale = rng.uniform(1e-9, 1.0, lay.n_cells).astype(dtype)
    u = rng.standard_normal(lay.n_dofs, dtype=np.float64).astype(dtype)
    free = cupy.ones(lay.n_dofs, dtype=bool)
    mf.HEX8_VARIANT = variant
    real = "double" if dtype == np.float64 else "float"
    if min_blocks is not None:
        name = "WALSH_MIN_BLOCKS" if variant == "walsh" else "COLUMN_MIN_BLOCKS"
        setattr(mf, name, dict(getattr(mf, name)) | {real: min_blocks})
    if rows is not None:
        mf.WALSH_ROWS = rows
    op = StructuredOperator(lay, scale, unit_cell_matrix(3), free)
    if op._gpu.variant != variant:
        raise RuntimeError(f"asked for {variant}, the operator chose {op._gpu.variant}")
    y = cupy.empty_like(u)
    for _ in range(3):
        op.apply(u, out=y)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeat):
        op.apply(u, out=y)
    stop.record()
    stop.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / repeat
    item = np.dtype(dtype).itemsize
    nbytes = lay.n_nodes * (6 * item + 3) + lay.n_cells * item
    flops = 1152.0 * lay.n_cells
    roof = max(nbytes / BANDWIDTH, flops / peak_flops(dtype))
    err = float("nan")
    if lay.n_cells <= 2_000_000:  # check against the NumPy twin (float64) where it is cheap
        from femopt.assembly.matrix_free import apply_numpy

        ref = apply_numpy(lay, cupy.asnumpy(u).astype(np.float64),
                          cupy.asnumpy(scale).astype(np.float64), unit_cell_matrix(3), None)
        err = float(np.abs(cupy.asnumpy(y) - ref).max() / np.abs(ref).max())
    del u, y, scale, op
    release_cached(cupy)
    return dict(cells=lay.n_cells, seconds=seconds, gbs=nbytes / seconds / 1e9,
                tflops=flops / seconds / 1e12, bw_frac=nbytes / seconds / BANDWIDTH, err=err,
                flop_frac=flops / seconds / peak_flops(dtype), roof_frac=roof / seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1M,10M,33.5M")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--variants", default="columns,walsh",
                    help="hex8 kernels: columns (z-marching, K0 literals; columns:N compiles "
                         "it for N blocks per multiprocessor), walsh (tiles of 32 x 8 cells, "
                         "K0 in the Walsh basis; walsh:N for N tiles per multiprocessor, "
                         "walsh:N:R for tiles of 32 x R), gather")
    args = ap.parse_args(argv)
    import cupy

    import femopt.assembly.matrix_free as mf

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"# hex8 elasticity operator apply, {name}, {date.today().isoformat()}")
    print(f"# peak FP64 {peak_flops(np.float64) / 1e12:.1f} TFLOP/s, FP32 "
          f"{peak_flops(np.float32) / 1e12:.1f} TFLOP/s (SMs x clock x lanes x 2); "
          f"bandwidth ceiling {BANDWIDTH / 1e12:.1f} TB/s")
    print("| cells | dtype | kernel | ms / apply | GB/s | of 3.0 TB/s | TFLOP/s | of peak flops "
          "| of roofline | max rel. error vs NumPy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label in args.sizes.split(","):
        for dtype, variant in product((np.float64, np.float32), args.variants.split(",")):
            kernel, *opts = variant.split(":")
            defaults = (mf.WALSH_MIN_BLOCKS, mf.WALSH_ROWS, mf.COLUMN_MIN_BLOCKS)
            try:
                r = bench(SIZES[label], dtype, args.repeat, kernel,
                          int(opts[0]) if opts else None,
                          int(opts[1]) if len(opts) > 1 else None)
            except Exception as exc:  # report and go on: one table, whatever fails
                print(f"| {label} | {np.dtype(dtype).name} | {variant} | failed: "
                      f"{type(exc).__name__}: {exc} | | | | | |")
                continue
            finally:
                mf.WALSH_MIN_BLOCKS, mf.WALSH_ROWS, mf.COLUMN_MIN_BLOCKS = defaults
            err_text = "" if np.isnan(r["err"]) else f"{r['err']:.1e}"
            print(f"| {r['cells'] / 1e6:.1f}M | {np.dtype(dtype).name} | {variant} | "
                  f"{r['seconds'] * 1e3:.3f} | {r['gbs']:.0f} | {r['bw_frac']:.0%} | "
                  f"{r['tflops']:.1f} | {r['flop_frac']:.0%} | {r['roof_frac']:.0%} | "
                  f"{err_text} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
