"""Where a design iteration's time goes on the GPU grid path: `femopt.api.run` of the 3D
cantilever of ``benchmarks/gpu_cli_run.py`` (no ``solver:`` section: the defaults) with
the solver's, the path's, the filter's and OC's steps wrapped, each timed between two
device synchronizations. A diagnostic: the synchronizations make the iteration a little
slower than an unhooked run (compare `gpu_cli_run.py`'s median). Prints, per step, the
seconds per design iteration after the first (which pays the NVRTC compilations, shown
apart), its calls per iteration, and the CuPy pool's live bytes when it first ran and
its live and held high-water marks while it ran (bytes per cell). Steps nest: a
step's time includes the steps it calls.

    python benchmarks/gpu_phase_times.py [--shape 256x128x128] [--iterations 4]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from femopt.backend import pool_total

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_cli_run import problem  # noqa: E402


class Steps:
    """Timed steps (label -> iteration -> seconds, calls) and the pool's bytes in each."""

    def __init__(self, cp: Any):
        self.cp = cp
        self.open: list[list] = []  # [label, t0, live high, held high] of running steps
        self.iteration = 0
        self.seconds: dict = defaultdict(lambda: defaultdict(float))
        self.calls: dict = defaultdict(lambda: defaultdict(int))
        self.first_live: dict[str, int] = {}
        self.live_high: dict[str, int] = defaultdict(int)
        self.held_high: dict[str, int] = defaultdict(int)
        self.live = 0
        self.sizes: dict[int, int] = {}
        self.cells = 0  # the fine grid's, to name the level of an apply

    def hook(self) -> Any:
        steps = self

        class Hook(steps.cp.cuda.MemoryHook):
            name = "femopt_phase_times"

            def malloc_postprocess(self, **kw):
                steps.live += kw["mem_size"]
                steps.sizes[kw["mem_ptr"]] = kw["mem_size"]
                for frame in steps.open:
                    frame[2] = max(frame[2], steps.live)

            def alloc_postprocess(self, **kw):
                held = pool_total(steps.cp)
                for frame in steps.open:
                    frame[3] = max(frame[3], held)

            def free_postprocess(self, **kw):
                steps.live -= steps.sizes.pop(kw["mem_ptr"], kw["mem_size"])

        return Hook()

    def wrap(self, owner: Any, name: str, label: Any) -> None:
        """Time ``owner.name`` under ``label`` (a string, or a function of the call's
        arguments that names it); a name ``owner`` lacks (older code) is skipped."""
        f = getattr(owner, name, None)
        if f is None:
            return
        sync = self.cp.cuda.Device().synchronize
        name_of = label if callable(label) else (lambda *args, **kwargs: label)

        @functools.wraps(f)
        def timed(*args, **kwargs):
            label = name_of(*args, **kwargs)
            sync()
            frame = [label, time.perf_counter(), self.live, pool_total(self.cp)]
            self.first_live.setdefault(label, self.live)
            self.open.append(frame)
            try:
                return f(*args, **kwargs)
            finally:
                sync()
                self.open.pop()
                self.seconds[label][self.iteration] += time.perf_counter() - frame[1]
                self.calls[label][self.iteration] += 1
                self.live_high[label] = max(self.live_high[label], frame[2])
                self.held_high[label] = max(self.held_high[label], frame[3])
                if label == "oc.update":  # the last step of a design iteration
                    self.iteration += 1

        setattr(owner, name, timed)

    def table(self, cells: int) -> str:
        rows = []
        for label, by_it in self.seconds.items():
            later = [it for it in by_it if it >= 1]
            n = max(len(later), 1)
            rows.append((sum(by_it[it] for it in later) / n, label,
                         sum(self.calls[label][it] for it in later) / n))
        out = ["| step | s per iteration (after the first) | calls per iteration "
               "| live at first call (B/cell) | live high (B/cell) | held high (B/cell) |",
               "| --- | --- | --- | --- | --- | --- |"]
        for seconds, label, calls in sorted(rows, reverse=True):
            out.append(f"| {label} | {seconds:.4f} | {calls:.1f} "
                       f"| {self.first_live[label] / cells:.0f} "
                       f"| {self.live_high[label] / cells:.0f} "
                       f"| {self.held_high[label] / cells:.0f} |")
        first = {label: round(by_it[0], 2) for label, by_it in self.seconds.items()
                 if by_it[0] > 0.05}
        out.append(f"\nthe first iteration's steps over 0.05 s (compilations included): {first}")
        return "\n".join(out)


def wrap_steps(steps: Steps) -> None:
    import femopt.evaluation.device as device
    import femopt.evaluation.grid_device as grid_device
    import femopt.filters.grid_filter as grid_filter
    import femopt.optimizers.oc as oc
    import femopt.solvers.galerkin as galerkin
    import femopt.solvers.multigrid as mg
    import femopt.solvers.multigrid_levels as levels
    import femopt.solvers.multigrid_transfer as transfer
    import femopt.solvers.smoothers as smoothers
    from femopt.assembly import matrix_free, structured_csr

    for name in ("update_grid_operator", "_set_design", "_make_smoothers", "solve_grid",
                 "precondition"):
        steps.wrap(mg.MultigridSolver, name, f"multigrid.{name}")
    for name in ("galerkin_cell_matrices", "coarsen_cell_matrices", "descendant_scales",
                 "estimate_lambda_max", "solve_mixed"):
        steps.wrap(mg, name, name)
    steps.wrap(levels.CoarseSolver, "__call__", "coarsest solve")
    steps.wrap(levels.CoarseSolver, "__init__", "coarsest factor")
    # the Galerkin levels by chunks of cell layers (their products and coarsening are the
    # galerkin module's own calls)
    for name in ("galerkin_cell_matrices", "coarsen_cell_matrices"):
        steps.wrap(galerkin, name, name)
    steps.wrap(mg, "assemble_level", "Galerkin level by chunks (products and scatter)")
    steps.wrap(structured_csr.StructuredCSR, "assemble_data", "coarse CSR assembly")
    steps.wrap(structured_csr.StructuredCSR, "assemble_layers", "coarse CSR assembly")
    steps.wrap(structured_csr.CSROperator, "apply", "coarse CSR apply")
    steps.wrap(levels, "descendant_scales", "descendant_scales")  # level 1's diagonal

    def apply_label(op, *args, **kwargs):
        if op.scale.ndim == 2:
            return "level 1 apply, cell-wise Galerkin (children's scale factors)"
        level = "fine" if op.layout.n_cells == steps.cells else "level 1 (rediscretized)"
        return f"matrix-free apply, {level}, {op.dtype}"

    steps.wrap(matrix_free.StructuredOperator, "apply", apply_label)
    if hasattr(levels, "GalerkinProduct"):  # older code applies level 1 cell-wise
        steps.wrap(levels.GalerkinProduct, "apply",
                   "level 1 apply, Galerkin by products (prolong, fine apply, restrict)")
    steps.wrap(matrix_free.StructuredOperator, "diagonal", "matrix-free diagonal")
    steps.wrap(smoothers.PolynomialSmoother, "run", "smoother")
    steps.wrap(transfer, "restrict_into", "restriction")
    steps.wrap(transfer, "prolong_add", "prolongation")
    steps.wrap(transfer, "prolong_into", "prolongation (into a fine vector: level 1's products)")
    steps.wrap(grid_device, "grid_sensitivity_cases", "adjoint term")
    for name in ("analyse", "solve_adjoints", "design_terms", "function_terms"):
        steps.wrap(device.DevicePath, name, f"path.{name}")
    steps.wrap(grid_filter.GridDensityFilter, "forward", "filter forward")
    steps.wrap(grid_filter.GridDensityFilter, "backward", "filter backward")
    steps.wrap(oc.OC, "update", "oc.update")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256x128x128")
    ap.add_argument("--iterations", type=int, default=4)
    args = ap.parse_args()

    import cupy as cp

    from femopt.api import run

    shape = tuple(int(s) for s in args.shape.split("x"))
    cells = shape[0] * shape[1] * shape[2]
    steps = Steps(cp)
    steps.cells = cells
    wrap_steps(steps)
    t0 = time.perf_counter()
    with steps.hook(), tempfile.TemporaryDirectory() as out:
        run(problem(shape, args.iterations, None, "none"), out, device="gpu")
    print(f"shape {args.shape}, {cells} cells, {args.iterations} iterations, wall "
          f"{time.perf_counter() - t0:.1f} s, pool held at the end "
          f"{pool_total(steps.cp) / cells:.0f} B/cell\n")
    print(steps.table(cells))


if __name__ == "__main__":
    main()
