"""A shape optimization run: the optimizer driven by the shape evaluator, with the same
results directory as a topology run (summary.json, history.csv, design.vtu, pictures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from femopt.io import plots
from femopt.io.failure import raise_pending
from femopt.io.progress import ProgressReporter
from femopt.io.results import HistoryWriter, atomic_write
from femopt.io.run_record import RunRecord, base_summary
from femopt.io.vtu import labels, write_vtu
from femopt.mesh.mesh import CELL_EDGES, Mesh
from femopt.plugins.manager import get_manager

EXTRA = ["quality", "backtracks"]  # history columns beyond the topology run's


def optimize_shape(model, out_dir: Path, limit: int, problem_bytes: bytes, quiet: bool,
                   stream, t0: float):
    """Run ``model``'s shape optimizer for at most ``limit`` iterations and write
    ``out_dir``; returns its :class:`~femopt.io.run_record.RunResult`. A failure during the run writes
    ``summary.json`` with ``status: failed`` and re-raises."""
    from femopt.evaluation.model import IterationRecord
    from femopt.shape.gradient import ShapeEvaluator

    pm = get_manager()
    opt = model.optimizer
    reporter = ProgressReporter(limit, stream=stream, quiet=quiet)
    history = HistoryWriter(out_dir / "history.csv", [b.label for b in model.bounds], EXTRA)
    points0 = np.array(model.mesh.points, dtype=float, copy=True)
    summary = base_summary(model, problem_bytes, design="shape",
                           moving_nodes=int(opt.moving.size), max_step=opt.max_step)

    def report(step, points) -> None:
        rec = IterationRecord(step.iteration, step.values[0],
                              {b.label: v for b, v in zip(model.bounds, step.values[1:])},
                              step.change, step.seconds,
                              {"quality": step.quality, "backtracks": step.backtracks})
        model.history.append(rec)
        history.write(rec)
        pm.hook.femopt_iteration(record=rec)
        reporter.iteration(rec)
        raise_pending()  # a Ctrl-C or SIGTERM that Python dropped in a finalizer

    pm.hook.femopt_run_start(problem=model, out_dir=out_dir)
    reporter.line(f"femopt: {model.name}: {model.mesh.n_cells} {model.mesh.cell_type} cells, "
                  f"{model.n_free} free dofs, shape design of {opt.moving.size} moving nodes, "
                  f"extension {opt.extension.kind} ({opt.extension.data}), max step "
                  f"{opt.max_step:.4g}, min quality {opt.min_quality:g} (initial "
                  f"{model.initial_quality:.3f}), solver {model.solver.name}")
    record = RunRecord(model, out_dir, history, summary, t0)
    with record:
        evaluator = ShapeEvaluator(model)
        with reporter:
            result = opt.run(evaluator.evaluate, points0, limit, report,
                             values_at=evaluator.values, gradients=evaluator.gradients)
        state = evaluator.analyse(result.points)
        values = evaluator.state_values(state)
        quality = opt.quality(result.points)
        summary.update({
            "objective": values[0],
            "constraints": {b.label: v for b, v in zip(model.bounds, values[1:])},
            "iterations": result.iterations,
            "converged": result.converged,
            "message": result.message,
            "initial_objective": result.initial_values[0],
            "min_quality": float(quality.min()),
            "max_node_motion": float(np.linalg.norm(result.points - points0, axis=1).max()),
        })
        np.save(out_dir / "design.npy", result.points)
        write_design_vtu(out_dir / "design.vtu", model, result.points, points0, state, quality)
        if model.problem.output.picture:
            if model.history:
                plots.convergence_plot(model.history, out_dir / "convergence.png")
            if model.mesh.dim == 2:
                shape_picture(model.mesh, result.points, opt.moving, out_dir / "design.png")
    return record.result(reporter)


def write_design_vtu(path: Path, model, points: np.ndarray, points0: np.ndarray, state,
                     quality: np.ndarray) -> None:
    """The moved mesh with the node motion (``shape_motion``, from the initial mesh), the
    states and the cells' scaled Jacobian."""
    mesh = Mesh(points, model.mesh.cells, model.mesh.cell_type)
    k = model.physics.dofs_per_node
    point = {"shape_motion": points - points0}
    for c, name in enumerate(model.case_names):
        field = model.physics.field_name
        key = field if len(model.case_names) == 1 else f"{field}_{name}"
        u = state.u[c].reshape(-1, k)
        point[key] = u[:, 0] if k == 1 else u
    with atomic_write(path) as tmp:
        write_vtu(tmp, mesh, {"quality": quality}, point, labels(model.name, model.problem.unit))


def shape_picture(mesh: Mesh, points: np.ndarray, moving: np.ndarray, path: Path) -> None:
    """2D: the moved mesh, its moving boundary in colour over the initial one (dashed)."""
    from matplotlib.collections import LineCollection

    from femopt.io.plots import _figure

    from femopt.shape.extension import boundary_facets

    facets = boundary_facets(mesh.cells, mesh.cell_type)
    on = np.zeros(mesh.n_nodes, dtype=bool)
    on[moving] = True
    edges = facets[on[facets].all(axis=1)]
    fig = _figure((6, 6))
    ax = fig.add_subplot()
    pairs = np.array(CELL_EDGES[mesh.cell_type])
    segments = points[mesh.cells[:, pairs.ravel()]].reshape(-1, 2, 2)
    ax.add_collection(LineCollection(segments, colors="0.75", linewidths=0.3))
    for e in edges:
        ax.plot(*mesh.points[e].T, color="0.3", linestyle="--", linewidth=1)
        ax.plot(*points[e].T, color="C3", linewidth=2)
    # zoom on the moving boundary (the far field is coarse and still)
    lo, hi = points[moving].min(axis=0), points[moving].max(axis=0)
    pad = 0.6 * float((hi - lo).max())
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.set_title("moving boundary: initial (dashed) and optimized")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
