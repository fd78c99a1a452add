"""Where the GPU memory of a design iteration on the grid path goes: the CuPy pool's
live bytes against the bytes it holds, and the call sites of the largest allocations.

Runs the 3D cantilever of ``benchmarks/gpu_cli_run.py`` through the public API
(``femopt.api.run``, the same path as ``femopt run --device gpu``) with a CuPy memory hook
that follows every block the pool hands out and takes back: the live bytes, and the bytes
the pool holds from the device. Live bytes only grow at an allocation, so the largest
after one is the live high-water mark exactly. Prints, per
cell: the live and held high-water marks (their difference is what the pool keeps in
freed blocks it could not reuse), then a table of the femopt call sites that asked for
the most bytes while the live bytes were at least 90% of their peak, and the blocks alive
at the peak by call site (a CuPy memory hook sees every block the pool hands out and takes
back), and where the pool took the block from the device that set its high-water mark,
with what was alive then.

    python benchmarks/gpu_memory_trace.py [--shape 256x128x128] [--iterations 3]
        [--precision mixed|double] [--solver-section default|none] [--allocator pool|async]

``--allocator async`` runs CUDA's stream-ordered allocator instead, as femopt sets it up
for ``FEMOPT_GPU_ALLOCATOR=async`` (``femopt.backend.gpu_allocator``: the device's
default pool, kept reserved), for comparison: it reports the driver pool's reserved and
used high-water marks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_cli_run import problem  # noqa: E402

MIB = 1 << 20


def site(depth: int = 1) -> str:
    """The innermost ``depth`` femopt frames of the current stack, as
    ``module.py:line (function)``, innermost first."""
    out = []
    for frame in reversed(traceback.extract_stack(limit=60)[:-2]):
        # femopt's own frames, not its allocator's (backend/gpu_pool.py)
        if "/femopt/" in frame.filename and not frame.filename.endswith("gpu_pool.py"):
            out.append(f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})")
            if len(out) == depth:
                break
    return " < ".join(out) or "(outside femopt)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x128x128")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--precision", choices=("mixed", "double"), default=None)
    ap.add_argument("--solver-section", choices=("default", "none"), default="none")
    ap.add_argument("--allocator", choices=("pool", "async"), default="pool")
    args = ap.parse_args()

    import cupy as cp

    from femopt.api import run

    shape = tuple(int(s) for s in args.shape.split("x"))
    cells = shape[0] * shape[1] * shape[2]
    data = problem(shape, args.iterations, args.precision, args.solver_section)

    if args.allocator == "async":
        from femopt.backend import pool_bytes

        os.environ["FEMOPT_GPU_ALLOCATOR"] = "async"  # femopt's own set-up of it
        with tempfile.TemporaryDirectory() as out:
            run(data, out, device="gpu")
        rt = cp.cuda.runtime
        handle = rt.deviceGetDefaultMemPool(cp.cuda.Device().id)
        reserved = pool_bytes(cp)  # the reserved high-water mark, as summary.json's
        used = rt.memPoolGetAttribute(handle, rt.cudaMemPoolAttrUsedMemHigh)
        print(f"cells {cells}  async allocator: reserved high {reserved / cells:.0f} B/cell, "
              f"used high {used / cells:.0f} B/cell")
        return

    from femopt.backend import gpu_allocator, pool_bytes, pool_total

    gpu_allocator()  # femopt's pools, as femopt run sets them up

    class Trace(cp.cuda.MemoryHook):
        """Live blocks by pointer (size, call site); the live high-water mark and the
        blocks alive at it; the call sites asking while live >= 90% of the peak."""
        name = "femopt_trace"

        def __init__(self):
            self.live: dict[int, tuple[int, str]] = {}
            self.used = self.peak = self.held = self.n = 0
            self.at_peak: dict[int, tuple[int, str]] = {}
            self.held_at: tuple[str, int, dict] = ("", 0, {})
            self.near: dict[str, int] = defaultdict(int)

        def malloc_postprocess(self, **kw):
            size, ptr = kw["mem_size"], kw["mem_ptr"]
            self.n += 1
            self.used += size
            near = self.used >= 0.9 * self.peak
            where = site() if size >= MIB or near else ""
            self.live[ptr] = (size, where)
            if near:
                self.near[where] += size
            if self.used > self.peak:
                self.peak = self.used
                if size >= MIB:  # a new peak worth a snapshot
                    self.at_peak = dict(self.live)

        def alloc_postprocess(self, **kw):
            # the pool took a new block from the device: where, and what was live then
            total = pool_total(cp)
            if total > self.held:
                self.held = total
                self.held_at = (site(4), self.used + kw["mem_size"], dict(self.live))

        def free_postprocess(self, **kw):
            size, _ = self.live.pop(kw["mem_ptr"], (kw["mem_size"], ""))
            self.used -= size

    trace = Trace()
    with trace, tempfile.TemporaryDirectory() as out:
        run(data, out, device="gpu")
    state = {"peak": trace.peak, "held": trace.held, "n": trace.n}
    near = trace.near
    state["at_peak"] = trace.at_peak

    print(f"shape {args.shape}, {cells} cells, {state['n']} allocations")
    print(f"live high-water {state['peak'] / cells:.0f} B/cell, "
          f"held high-water {state['held'] / cells:.0f} B/cell, "
          f"held at the end {pool_total(cp) / cells:.0f} B/cell, the pools' high-water "
          f"mark (summary.json's gpu_pool_bytes) {pool_bytes(cp) / cells:.0f} B/cell")
    by_site = defaultdict(lambda: [0, 0])
    for nbytes, where in state["at_peak"].values():
        by_site[where][0] += nbytes
        by_site[where][1] += 1
    print("\n| alive at the live peak, by call site | arrays | B/cell |")
    print("| --- | --- | --- |")
    for where, (nbytes, count) in sorted(by_site.items(), key=lambda kv: -kv[1][0]):
        print(f"| {where} | {count} | {nbytes / cells:.1f} |")
    where, live, blocks = trace.held_at
    print(f"\nthe pool reached its high-water mark asking at {where}, with "
          f"{live / cells:.0f} B/cell live (and the block asked for)")
    by_site = defaultdict(lambda: [0, 0])
    for nbytes, at in blocks.values():
        by_site[at][0] += nbytes
        by_site[at][1] += 1
    print("\n| alive then, by call site | arrays | B/cell |")
    print("| --- | --- | --- |")
    for at, (nbytes, count) in sorted(by_site.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f"| {at} | {count} | {nbytes / cells:.1f} |")
    print("\n| asked near the peak (live >= 90% of it) | B/cell asked |")
    print("| --- | --- |")
    for where, nbytes in sorted(near.items(), key=lambda kv: -kv[1])[:25]:
        print(f"| {where} | {nbytes / cells:.1f} |")


if __name__ == "__main__":
    main()
