"""Running a problem file end to end: validate, build, optimize, write results."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from femopt.errors import FemoptError
from femopt.io import plots
from femopt.io.progress import ProgressReporter
from femopt.io.results import (HistoryWriter, check_output_dir, design_result,
                               prepare_output_dir, versions, write_json_atomic)
from femopt.plugins.manager import get_manager, get_registry
from femopt.problem.load import read_problem
from femopt.problem.model import Model


def build_model(problem_file: str | Path) -> Model:
    """Read, validate and build a problem; raises InputError/ProblemError on bad input."""
    registry = get_registry()
    return Model(read_problem(problem_file, registry), registry)


def output_dir_for(model: Model, out: str | Path | None) -> Path:
    if out is not None:
        return Path(out)
    if model.problem.output.dir is not None:
        d = Path(model.problem.output.dir)
        return d if d.is_absolute() else Path(model.loaded.filename).parent / d
    return Path("results") / model.name


@dataclass
class RunResult:
    summary: dict[str, Any]
    out_dir: Path
    exit_code: int


def run(problem_file: str | Path, out: str | Path | None = None, max_iter: int | None = None,
        quiet: bool = False, stream=None) -> RunResult:
    """Optimize ``problem_file``; returns the summary. Bad input raises before anything
    is written; a failure during the run writes what it has and re-raises."""
    t0 = time.perf_counter()
    model = build_model(problem_file)
    out_dir = output_dir_for(model, out)
    check_output_dir(out_dir)
    limit = max_iter if max_iter is not None else model.optimizer.options.max_iter
    check = getattr(model.optimizer, "check", None)
    if check is not None:  # an optimizer that cannot take this problem is bad input
        check(model)
    prepare_output_dir(out_dir)

    pm = get_manager()
    reporter = ProgressReporter(limit, stream=stream, quiet=quiet)
    extra_names = [k for f in model.filters for k in f.state()]
    history = HistoryWriter(out_dir / "history.csv", [b.label for b in model.bounds],
                            extra_names)

    def on_iteration(rec) -> bool:
        history.write(rec)
        pm.hook.femopt_iteration(record=rec)
        return reporter.iteration(rec)

    model.on_iteration = on_iteration
    pm.hook.femopt_run_start(problem=model, out_dir=out_dir)
    reporter.line(f"femopt: {model.name}: {model.mesh.n_cells} cells, "
                  f"{model.assembler.free.size} free dofs, {len(model.case_names)} load case(s), "
                  f"optimizer {model.optimizer.name}, solver {model.solver.name}")
    summary: dict[str, Any] = {"problem": model.name, "problem_file": str(problem_file),
                               "device": "cpu", "n_cells": model.mesh.n_cells,
                               "n_dofs": model.n_dofs, "versions": versions()}
    status, error = "ok", None
    try:
        model.start_clock()
        with reporter, get_registry().guard("optimizer", model.optimizer.name, "run()"):
            result = model.optimizer.run(model, model.x0.copy(), limit)
        x_final = result.x
        state = model.analyse(model.physical(x_final)[0])
        values = [fn.value(state) for fn in model.functions()]
        summary.update({
            "objective": values[0],
            "constraints": {b.label: v for b, v in zip(model.bounds, values[1:])},
            "iterations": result.iterations,
            "converged": result.converged,
            "message": result.message,
        })
        design = design_result(model, x_final, state)
        registry = get_registry()
        for fmt in model.problem.output.formats:
            exporter = registry.create("exporter", fmt, registry.get("exporter", fmt).cls.Options())
            with registry.guard("exporter", fmt, "export()"):
                exporter.export(design, out_dir / f"design{exporter.suffix}")
        if model.problem.output.picture and model.history:
            plots.convergence_plot(model.history, out_dir / "convergence.png")
            if model.mesh.grid is not None:
                plots.design_picture(model.mesh, design.cell_data["density"],
                                     out_dir / "design.png", model.problem.output.threshold)
        np.save(out_dir / "design.npy", np.asarray(x_final))
    except BaseException as exc:  # noqa: BLE001 - the summary must say the run failed
        status, error = "failed", exc
        summary.update({"iterations": len(model.history), "converged": False,
                        "message": f"{type(exc).__name__}: {exc}"
                        if not isinstance(exc, FemoptError) else str(exc)})
    finally:
        history.close()
        wall = time.perf_counter() - t0
        n_it = max(len(model.history), 1)
        summary.update({"status": status, "wall_time": wall,
                        "seconds_per_iteration": sum(r.seconds for r in model.history) / n_it,
                        "evaluations": model.evaluations})
        write_json_atomic(out_dir / "summary.json", summary)
        pm.hook.femopt_run_end(summary=summary)
    if error is not None:
        raise error
    reporter.line(f"done: {summary['message']}; objective {summary['objective']:.6e} after "
                  f"{summary['iterations']} iterations ({wall:.2f} s); results in {out_dir}")
    return RunResult(summary, out_dir, 0)
