"""Running a problem file end to end: validate, build, optimize, write results."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from femopt.backend import pool_bytes
from femopt.errors import InputError
from femopt.io.checkpoint import CHECKPOINT, Checkpoint
from femopt.io.design_space import check_design_space
from femopt.io.export import make_exporter, write_atomic
from femopt.io import manifest, run_files
from femopt.io.failure import raise_pending, run_failures, write_errors
from femopt.io.npy import save_npy
from femopt.io.progress import ProgressReporter
from femopt.io.results import (HistoryWriter, atomic_write, check_output_dir, design_result,
                               ensure_space, final_frequencies, prepare_output_dir)
from femopt.io.resultdir import PROBLEM_COPY, open_result_dir, problem_hash, write_source
from femopt.io.run_record import RunRecord, RunResult, base_summary
from femopt.optimizers.base import OptimizationResult, converged_message
from femopt.plugins.manager import get_manager, get_registry
from femopt.parallel.comm_counts import per_iteration
from femopt.evaluation.build import build_model
from femopt.evaluation.model import Model
from femopt.problem.precheck import check_before_run
from femopt.evaluation.robust import REALIZATIONS, lost_realizations
from femopt.solvers.choice import choice_line

log = logging.getLogger("femopt")


def output_dir_for(model: Model, out: str | Path | None) -> Path:
    """``--out``, else ``output.dir``, else ``results/<name>``; a relative one is relative
    to the working directory, whichever of the three gave it."""
    if out is not None:
        return Path(out)
    if model.problem.output.dir is not None:
        return Path(model.problem.output.dir)
    return Path("results") / manifest.default_dir_name(model.name)


def run(problem_file: str | Path, out: str | Path | None = None, max_iter: int | None = None,
        quiet: bool = False, stream=None, device: str | None = None,
        force: bool = False, comm=None) -> RunResult | None:
    """Optimize ``problem_file``; returns the summary. Bad input raises before anything
    is written; a failure during the run writes what it has and re-raises. ``device``
    (auto, cpu, gpu) overrides the file's. A directory holding another problem's results
    is refused unless ``force``; the previous run's files are removed. ``comm`` (a
    :class:`femopt.parallel.comm.Comm`) runs it distributed: every rank calls this, rank
    0 writes the results directory and returns the summary, the others return None."""
    t0 = time.perf_counter()
    model = build_model(problem_file, device, distributed=comm)
    return run_model(model, Path(problem_file).read_bytes(), out, max_iter, quiet, stream,
                     source=Path(problem_file), t0=t0, force=force)


def run_model(model: Model, problem_bytes: bytes, out: str | Path | None = None,
              max_iter: int | None = None, quiet: bool = False, stream=None,
              source: Path | None = None, t0: float | None = None,
              force: bool = False) -> RunResult:
    """Optimize a built ``model`` whose problem text is ``problem_bytes`` (copied into the
    results directory unless that copy is ``source`` itself). A directory holding
    another problem's results is refused unless ``force``."""
    t0 = time.perf_counter() if t0 is None else t0
    out_dir = output_dir_for(model, out)
    limit = max_iter if max_iter is not None else model.optimizer.options.max_iter
    follower = _follower(model)
    keep = () if source is None else (source,)  # the problem file, when it lies there
    with _root_decides(model):  # in a distributed run rank 0 checks and tells the others
        if not follower:
            check_output_dir(out_dir)
        check_before_run(model)  # an optimizer that cannot take this problem is bad input
        if not follower:
            manifest.claim(out_dir, model.name, force)  # writes nothing
            # design files that surely do not fit, the previous run's files removed
            check_design_space(model, out_dir, manifest.previous_files(out_dir, keep))
            prepare_output_dir(out_dir)
    if follower:
        return _follow(model, limit, None, out_dir, problem_bytes, t0)
    with run_failures(out_dir):  # from here on, anything is a run failure (exit 1)
        # the previous run's files go (a stale checkpoint would resume another run)
        manifest.clear_previous(out_dir, keep=keep)
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
        (out_dir / "checkpoint.json").unlink(missing_ok=True)
        manifest.start(out_dir, model.name)
        copy = out_dir / PROBLEM_COPY
        if not (source is not None and copy.exists() and copy.samefile(source)):
            with atomic_write(copy) as tmp:
                tmp.write_bytes(problem_bytes)
            write_source(out_dir, Path(model.loaded.filename).resolve().parent, model.name)
        return _optimize(model, out_dir, limit, problem_bytes, None, quiet, stream, t0)


def solver_summary(model: Model) -> dict:
    """What summary.json says of the device paths' solves, read when the run closes: the
    GPU memory pool's high-water mark (``gpu_pool_bytes``; None on a NumPy twin) and, on
    the grid path, the Krylov precision, the float32 solves redone in float64 and the
    tolerance the solves met (the path's default where the problem sets none)."""
    solver = model.solver
    out: dict = {}
    if getattr(model.path, "krylov", None) is not None:
        out = {"solver_precision": model.path.krylov,
               "precision_fallbacks": lambda: solver.precision_fallbacks,
               "solver_rtol": solver.options.rtol}
    if out or model.device == "gpu":
        out["gpu_pool_bytes"] = lambda: pool_bytes(model.path.xp)
    return out


def _is_shape_problem(problem_bytes: bytes) -> bool:
    import yaml

    try:
        data = yaml.safe_load(problem_bytes)
    except yaml.YAMLError:
        return False  # resume reports the broken file when it parses it
    design = data.get("design") if isinstance(data, dict) else None
    return isinstance(design, dict) and design.get("type") == "shape"


def resume(result_dir: str | Path, max_iter: int | None = None, quiet: bool = False,
           stream=None, device: str | None = None, comm=None) -> RunResult | None:
    """Continue the run of ``result_dir`` from its ``checkpoint.h5``. InputError, with
    nothing written, when the checkpoint is missing or unreadable or was written for a
    different problem file than the directory's ``problem.yaml``."""
    t0 = time.perf_counter()
    rd = open_result_dir(result_dir)
    if _is_shape_problem(rd.problem_bytes):
        raise InputError(f"{rd.path}: a shape optimization run keeps no checkpoint and "
                         f"cannot be resumed; run {rd.problem_file} again")
    ck, pieces = run_files.read_checkpoint(rd.path, comm)
    ck_file = rd.path / (CHECKPOINT if pieces is None else "checkpoint.json")
    if ck.problem_sha256 != rd.sha256:
        raise InputError(
            f"{ck_file} was written for a different problem file (sha256 "
            f"{ck.problem_sha256[:12]}...) than {rd.problem_file} (sha256 {rd.sha256[:12]}...); "
            "refusing to resume")
    model = build_model(rd.problem_file, device, problem_dir=rd.problem_dir,
                        distributed=comm)
    model.name = rd.problem_name or model.name  # the copy here is named problem.yaml
    if pieces is not None:  # this rank's cells of the pieces
        from femopt.parallel.checkpoints import localize

        ck = localize(rd.path, pieces, ck, model.path)
    if ck.optimizer != model.optimizer.name or (not ck.local and ck.x.shape != (model.n,)):
        raise InputError(f"{ck_file} does not match {rd.problem_file} "
                         f"(optimizer {ck.optimizer}, {ck.x.size} design variables)")
    if len(ck.filter_states) != len(model.stateful()):
        raise InputError(f"{ck_file}: {len(ck.filter_states)} filter state(s) "
                         f"for {len(model.stateful())} in the design chain")
    limit = max_iter if max_iter is not None else model.optimizer.options.max_iter
    check_before_run(model)
    with _root_decides(model):
        if not _follower(model):
            check_design_space(model, rd.path, resuming=True)  # nothing is removed
    for part, state in zip(model.stateful(), ck.filter_states):
        part.load_state_dict(state)
    model.optimizer.load_state_dict(
        {k: run_files.on_device(model, ck, v) if isinstance(v, np.ndarray) else v
         for k, v in ck.optimizer_state.items()})
    model.objective_scale = ck.objective_scale
    if ck.local:
        from femopt.parallel.checkpoints import restore_warm_starts

        restore_warm_starts(model.path, ck.warm)
    model.evaluations = ck.evaluations
    model.history = list(ck.history)
    if _follower(model):
        return _follow(model, limit, ck, rd.path, rd.problem_bytes, t0)
    with run_failures(rd.path):
        return _optimize(model, rd.path, limit, rd.problem_bytes, ck, quiet, stream, t0)


def _optimize(model: Model, out_dir: Path, limit: int, problem_bytes: bytes,
              ck: Checkpoint | None, quiet: bool, stream, t0: float) -> RunResult:
    if model.shape:
        from femopt.shape.run import optimize_shape

        return optimize_shape(model, out_dir, limit, problem_bytes, quiet, stream, t0)
    pm = get_manager()
    out_cfg = model.problem.output
    sha = problem_hash(problem_bytes)
    reporter = ProgressReporter(limit, stream=stream, quiet=quiet)
    extra_names = [k for f in model.filters for k in f.state()]
    if model.robust is not None:  # each realization's objective
        extra_names += [f"objective_{r}" for r in REALIZATIONS]
    history = HistoryWriter(out_dir / "history.csv", [b.label for b in model.bounds],
                            extra_names)
    for rec in model.history:  # resumed: the rows up to the checkpoint, nothing after
        history.write(rec)
    summary = base_summary(model, problem_bytes)
    if model.comm is not None:
        summary["ranks"] = model.comm.size
    if ck is not None:
        summary["resumed_from"] = ck.iteration
    # from here on whatever happens ends in summary.json (the set-up below writes too)
    record = RunRecord(model, out_dir, history, summary, t0,
                       evaluations=lambda: model.evaluations, **solver_summary(model))
    series = None

    def on_iteration(rec) -> bool:
        notes = getattr(model.solver, "notes", None)
        while notes:  # what the solves of this iteration decided (a precision fallback)
            reporter.line(f"femopt: iteration {rec.iteration}: {notes.pop(0)}")
        with write_errors():
            history.write(rec)
        pm.hook.femopt_iteration(record=rec)
        return reporter.iteration(rec)

    def on_end_iteration(it: int, x, optimizer, converged: bool) -> None:
        with write_errors():
            _write_iteration(it, x, optimizer, converged)
        raise_pending()  # a Ctrl-C or SIGTERM that Python dropped in a finalizer

    def _write_iteration(it: int, x, optimizer, converged: bool) -> None:
        if series is not None and it % out_cfg.series_every == 0:
            rho = run_files.series_rho(model, x)
            ensure_space(out_dir, 2 * rho.nbytes)
            series.add(it, rho)
        if out_cfg.checkpoint_every and (it % out_cfg.checkpoint_every == 0 or converged):
            run_files.checkpoint(model, out_dir, it, x, optimizer, converged, sha)

    model.on_iteration = on_iteration
    model.on_end_iteration = on_end_iteration
    action = f"resuming after iteration {ck.iteration}" if ck else "optimizer"
    with record:
        if out_cfg.series_every:
            ensure_space(out_dir, 0)  # HDF5 must not meet a full disk: it crashed there
            series = run_files.series_writer(model, out_dir, ck)
            if ck is None:  # the series starts at the initial design
                series.add(0, run_files.series_rho(model, model.x0))
        pm.hook.femopt_run_start(problem=model, out_dir=out_dir)
        for note in model.device_notes:
            reporter.line(f"femopt: {note}")
        if (line := choice_line(model)) is not None:
            reporter.line(line)
        if model.robust is not None:
            reporter.line(f"femopt: {model.robust.describe(model.problem.unit)}")
        reporter.line(f"femopt: {model.name}: {model.mesh.n_cells} cells, "
                      f"{model.n_free} free dofs, {len(model.case_names)} load case(s), "
                      f"{action} {model.optimizer.name}, solver {model.solver.name}"
                      + (", on the GPU" if model.device == "gpu" else "")
                      + (f", distributed on {model.comm.size} rank(s)"
                         if model.comm is not None else ""))
        model.start_clock()
        with reporter, get_registry().guard("optimizer", model.optimizer.name, "run()"):
            if ck is not None and ck.converged:
                tol = model.optimizer.options.tol
                result = OptimizationResult(run_files.on_device(model, ck, ck.x),
                                            ck.iteration, True,
                                            converged_message(ck.change, tol))
            elif ck is not None and ck.iteration >= limit:
                result = OptimizationResult(run_files.on_device(model, ck, ck.x),
                                            ck.iteration, False,
                                            f"iteration limit {limit} reached")
            else:
                # the optimizer reads its start, never writes it (the model's x0 may be a
                # constant view): no copy here
                x0 = run_files.on_device(model, ck, ck.x) if ck is not None else model.x0
                result = model.optimizer.run(model, x0, limit,
                                             start=ck.iteration if ck else 0)
        raise_pending()  # a signal Python dropped during the last iteration's end
        # the final fields stay on a device path's device: the writers read them by slabs
        values, rho_final, state = model.final_analysis(result.x, lazy=True)
        x_final = model.output_cells(result.x)
        summary.update({
            "objective": values[0],
            "constraints": {b.label: v for b, v in zip(model.bounds, values[1:])},
            "iterations": result.iterations,
            "converged": result.converged,
            "message": result.message,
        })
        if frequencies := final_frequencies(model):
            summary["frequencies"] = frequencies
        if model.realization_values is not None:
            summary["robust"] = {**model.robust.summary(), **model.realization_values}
            if lost := lost_realizations(model.history, model.realization_values):
                summary["robust"]["lost"] = lost
                log.warning("robust: the %s design's objective fell to 0 during the run "
                            "(a member was cut: its output no longer moves, or no load "
                            "reaches it); slow the projection's continuation or enlarge "
                            "the filter radius", " and ".join(lost))
        save_npy(out_dir / "design.npy", x_final)
        save_npy(out_dir / "density.npy", rho_final)
        if series is not None and result.iterations not in series.steps:
            ensure_space(out_dir, 2 * rho_final.nbytes)
            series.add(result.iterations, run_files.final_rho(model, rho_final))
        run_files.design_pieces(model, out_dir, result.x)
        if model.comm is not None:  # every rank's peak memory, for the summary
            summary["peak_rss_mib"] = model.comm.gather(run_files.peak_rss_mib())
            summary["communication"] = per_iteration(model.comm_snapshots, model.comm_cg,
                                                     model.comm.size)
        design = design_result(model, x_final, state)
        exports = {}
        for fmt in out_cfg.formats:
            exporter = make_exporter(fmt, {"threshold": out_cfg.threshold,
                                           "smooth": out_cfg.smooth,
                                           "thickness": out_cfg.thickness})
            info = write_atomic(exporter, design, out_dir / f"design{exporter.suffix}")
            if info:
                exports[fmt] = info
        if exports:
            summary["exports"] = exports
        if out_cfg.picture and model.history:
            from femopt.io import plots

            plots.convergence_plot(model.history, out_dir / "convergence.png",
                                   {b.label: (b.kind, b.limit) for b in model.bounds})
            plots.design_picture(model.mesh, design.cell_data["density"],
                                 out_dir / "design.png", out_cfg.threshold,
                                 plots.marks_of(model), model.problem.unit)
    return record.result(reporter)


# -- distributed runs: what the ranks other than 0 do ------------------------------------

def _follower(model: Model) -> bool:
    """Whether this process is a rank other than 0 of a distributed run."""
    return model.comm is not None and not model.comm.root


class _root_decides:
    """``with _root_decides(model):`` rank 0's checks before a distributed run: an error
    there is raised on every rank (the others quietly, see
    :class:`femopt.parallel.launch.FollowerExit`), so that none waits for the others."""

    def __init__(self, model: Model):
        self.comm = model.comm if model.comm is not None and model.comm.size > 1 else None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if self.comm is None:
            return False
        from femopt.parallel.launch import FollowerExit

        code = None
        if exc is not None:
            code = getattr(exc, "exit_code", 2) if isinstance(exc, Exception) else 1
        code = self.comm.bcast(code)
        if exc is None and code is not None:
            raise FollowerExit(code)
        return False


def _follow(model: Model, limit: int, ck: Checkpoint | None, out_dir: Path,
            problem_bytes: bytes, t0: float) -> None:
    """A rank other than 0: the same optimization, taking part in every gather rank 0
    makes for the results directory, writing nothing -- but ``summary.json`` when it
    fails (rank 0 is then waiting for it and cannot)."""
    from femopt.io.failure import describe
    from femopt.io.results import write_json_atomic
    from femopt.parallel.launch import FollowerExit

    try:
        return _follow_run(model, limit, ck, out_dir, problem_hash(problem_bytes))
    except (FollowerExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        comm = model.comm
        summary = base_summary(model, problem_bytes)
        summary.update({"ranks": comm.size, "iterations": len(model.history),
                        "converged": False, "status": "failed",
                        "message": f"rank {comm.rank} of {comm.size} failed: {describe(exc)}",
                        "wall_time": time.perf_counter() - t0})
        if ck is not None:
            summary["resumed_from"] = ck.iteration
        try:
            write_json_atomic(out_dir / "summary.json", summary)
        except OSError:
            pass
        raise


def _follow_run(model: Model, limit: int, ck: Checkpoint | None, out_dir: Path,
                sha: str) -> None:
    out_cfg = model.problem.output

    def on_end_iteration(it: int, x, optimizer, converged: bool) -> None:
        if series is not None and it % out_cfg.series_every == 0:
            series.add(it, run_files.series_rho(model, x))
        if out_cfg.checkpoint_every and (it % out_cfg.checkpoint_every == 0 or converged):
            run_files.checkpoint(model, out_dir, it, x, optimizer, converged, sha)

    model.on_end_iteration = on_end_iteration
    series = run_files.series_writer(model, out_dir, ck) if out_cfg.series_every else None
    if series is not None and ck is None:
        series.add(0, run_files.series_rho(model, model.x0))
    model.start_clock()
    if ck is not None and (ck.converged or ck.iteration >= limit):
        x, iterations = run_files.on_device(model, ck, ck.x), ck.iteration
    else:
        x0 = run_files.on_device(model, ck, ck.x) if ck is not None else model.x0
        result = model.optimizer.run(model, x0, limit, start=ck.iteration if ck else 0)
        x, iterations = result.x, result.iterations
    model.final_analysis(x)
    model.host_cells(x)
    if series is not None and iterations not in series.steps:
        series.add(iterations, run_files.final_rho(model, None))
    run_files.design_pieces(model, out_dir, x)
    model.comm.gather(run_files.peak_rss_mib())
    return None

