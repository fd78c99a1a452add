"""The record of one run, whichever design kind it optimizes (densities or a shape): the
summary's common fields, the failure of a run that raised, and the close that writes
summary.json and calls the run-end hook whatever happened."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from femopt.errors import RunError
from femopt.io import manifest
from femopt.io.failure import describe, failure_details, run_status
from femopt.io.results import versions, write_json_atomic
from femopt.io.resultdir import problem_hash
from femopt.plugins.manager import get_manager


@dataclass
class RunResult:
    summary: dict[str, Any]
    out_dir: Path
    exit_code: int


def base_summary(model, problem_bytes: bytes, **extra: Any) -> dict[str, Any]:
    """What every summary.json starts with: the problem, its unit and file, the device,
    the sizes and the versions."""
    return {"problem": model.name, "unit": model.problem.unit, "dim": model.mesh.dim,
            "problem_file": model.loaded.filename,
            "problem_sha256": problem_hash(problem_bytes), "device": model.device,
            "n_cells": model.mesh.n_cells, "n_dofs": model.n_dofs, **extra,
            "versions": versions()}


class RunRecord:
    """Open for the optimization of one run: ``with record:`` turns whatever
    the run raises into ``status`` (failed or interrupted) in the summary, and closes the
    run (history.csv, summary.json, the run-end hook) in any case; :meth:`result` then
    re-raises the error or prints the closing line."""

    def __init__(self, model, out_dir: Path, history, summary: dict[str, Any], t0: float,
                 **close_extra: Any):
        self.model, self.out_dir, self.history = model, out_dir, history
        self.summary, self.t0, self.close_extra = summary, t0, close_extra
        self.error: BaseException | None = None
        self.wall = 0.0

    def __enter__(self) -> "RunRecord":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        status = "ok"
        if exc is not None:
            status, self.error = run_status(exc), exc
            self.summary.update({"iterations": len(self.model.history), "converged": False,
                                 "message": describe(exc), **failure_details(exc)})
        extra = {k: (v() if callable(v) else v) for k, v in self.close_extra.items()}
        self.wall = close_run(self.out_dir, self.summary, self.model, self.history, self.t0,
                              status, **extra)
        return True  # raised again by result()

    def result(self, reporter) -> RunResult:
        if self.error is not None:
            raise self.error
        s = self.summary
        reporter.line(f"done: {s['message']}; objective {s['objective']:.6e} after "
                      f"{s['iterations']} iterations ({self.wall:.2f} s); results in "
                      f"{self.out_dir}")
        return RunResult(s, self.out_dir, 0)


def close_run(out_dir: Path, summary: dict[str, Any], model, history, t0: float,
              status: str, **extra: Any) -> float:
    """End a run, whatever happened: close history.csv, write summary.json (status, wall
    time, seconds per iteration, ``extra``) and call the run-end hook. Returns the wall
    time."""
    unwritten = None
    try:
        history.close()
    except OSError as exc:  # a full disk: the summary below says so if it can
        unwritten = exc
    wall = time.perf_counter() - t0
    n_it = max(len(model.history), 1)
    summary.update({"status": status, "wall_time": wall,
                    "seconds_per_iteration": sum(r.seconds for r in model.history) / n_it,
                    **extra})
    if unwritten is not None and status == "ok":
        summary.update(status="failed", message=describe(unwritten))
    try:
        write_json_atomic(out_dir / "summary.json", summary)
    except OSError as exc:
        unwritten = unwritten or exc
    manifest.record(out_dir)
    get_manager().hook.femopt_run_end(summary=summary)
    if unwritten is not None and status == "ok":
        raise RunError(describe(unwritten)) from unwritten
    return wall
