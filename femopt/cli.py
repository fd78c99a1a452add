"""The ``femopt`` command line. The only place that maps errors to exit codes:
0 done, 1 a failure during a run, 2 bad input (problem file, mesh, plugin, arguments),
130 and 143 interrupted by SIGINT and SIGTERM."""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import sys
from pathlib import Path

from femopt.errors import FemoptError, InputError, ProblemError
from femopt.io.failure import EXIT_SIGINT, interrupted_message, signals_interrupt

log = logging.getLogger("femopt")


DEVICES = ("auto", "cpu", "gpu")
GPU_CHECK_RTOL = 1e-10  # iterative solvers' tolerance in check-gradients (CPU and GPU)
DEVICE_HELP = ("where the design iterations run: gpu, cpu, or auto (the GPU when CuPy sees "
               "one and the problem fits the GPU path); overrides the file's device")


RANKS_HELP = ("run distributed on N MPI ranks of this machine (mpiexec -n N; needs mpi4py "
              "and an MPI such as the mpich wheel); 1: the distributed path in this "
              "process. Under mpiexec a run is distributed by itself")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _end_of_run(result, quiet: bool) -> None:
    from femopt.io.report import end_of_run_lines

    if not quiet:
        print("\n".join(end_of_run_lines(result.out_dir, result.summary,
                                          int(result.summary.get("dim", 3)))))


# the communicator of a distributed run in this process (None: not distributed); main's
# error handling stops the other ranks through it
_COMM = None


def _distributed(args, problem: str | None) -> tuple[int | None, object]:
    """(exit code of a launched mpiexec or None, the communicator of this process's run).
    ``--ranks N`` (N > 1) outside mpiexec checks the problem and the rank count, then
    runs the same command under ``mpiexec -n N``."""
    global _COMM
    from femopt.parallel.comm import launched_size
    from femopt.parallel.launch import check_ranks, communicator, launch, strip_ranks

    ranks = getattr(args, "ranks", None)
    if ranks is not None and ranks > 1 and launched_size() <= 1:
        if problem is not None:
            check_ranks(problem, ranks, args.device)
        return launch(strip_ranks(args.argv), ranks), None
    _COMM = communicator(ranks)
    if _COMM is not None:
        from femopt.parallel.launch import catch_signals

        catch_signals(_COMM)
    return None, _COMM


def cmd_run(args) -> int:
    from femopt.runner import run

    code, comm = _distributed(args, args.problem)
    if code is not None:
        return code
    follower = comm is not None and not comm.root
    result = run(args.problem, out=args.out, max_iter=args.max_iter,
                 quiet=args.quiet or follower, device=args.device, force=args.force,
                 comm=comm)
    if result is not None:
        _end_of_run(result, args.quiet)
    return 0


def cmd_resume(args) -> int:
    from femopt.runner import resume

    code, comm = _distributed(args, None)
    if code is not None:
        return code
    follower = comm is not None and not comm.root
    result = resume(args.result_dir, max_iter=args.max_iter, quiet=args.quiet or follower,
                    device=args.device, comm=comm)
    if result is not None:
        _end_of_run(result, args.quiet)
    return 0


def _threshold(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {v:g}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive length, got {text!r}")
    return v


def cmd_export(args) -> int:
    from femopt.io.export import export_result

    report = export_result(args.result_dir, args.format, threshold=args.threshold,
                           smooth=args.smooth, thickness=args.thickness, out=args.out,
                           force=args.force, verify=args.verify)
    line = f"wrote {report['file']}"
    if "volume" in report:
        line += (f": volume {report['volume']:.6g} {report['unit']}^3 "
                 f"({100 * report['volume_error']:+.2f}% against the thresholded design)")
        if report.get("faces"):
            line += f", {report['faces']} triangles, watertight"
    print(line)
    v = report.get("verify")
    if v:
        print(f"re-analysis ({v['mesh']['cells']} {v['mesh']['cell_type']} cells): compliance "
              f"{v['compliance_exported']:.6g} exported vs {v['compliance_optimized']:.6g} "
              f"optimized (ratio {v['compliance_ratio']:.3f})")
        target = (f", {100 * (v['volume_vs_target'] - 1):+.2f}% against the target "
                  f"{v['volume_target']:.6g}" if v["volume_target"] else "")
        print(f"volume {v['volume_exported']:.6g} ({100 * v['volume_error']:+.2f}% against "
              f"the thresholded design{target}); report in "
              f"{Path(args.result_dir) / 'verify.json'}")
    return 0


def cmd_validate(args) -> int:
    from femopt.evaluation.build import build_model
    from femopt.problem.precheck import check_before_run

    model = build_model(args.problem)
    check_before_run(model)
    print(f"{args.problem}: ok ({model.mesh.n_cells} cells, {model.n_dofs} dofs, "
          f"objective {model.objective.name}, {len(model.bounds)} constraint(s), "
          f"optimizer {model.optimizer.name})")
    return 0


def cmd_check_gradients(args) -> int:
    import numpy as np

    from femopt.adjoint.taylor import check_model_gradients
    from femopt.runner import build_model

    # on the CPU path unless asked: --device gpu checks the GPU path's own gradients
    model = build_model(args.problem, device=args.device)
    if model.shape:
        return _check_shape_gradients(model, args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(0.25, 0.75, model.n)
    x[model.x_fixed_idx] = model.x_fixed_val
    direction = rng.standard_normal(model.n)
    direction[model.x_fixed_idx] = 0.0
    if model.device == "gpu":
        x, direction = model.to_device(x), model.to_device(direction)
    o = model.solver.options
    if getattr(o, "rtol", 0.0) > GPU_CHECK_RTOL:
        # the Taylor remainders at the smallest step are about 1e-6 of J: the
        # iterative solves must be well below that
        model.solver.options = o.model_copy(update={"rtol": GPU_CHECK_RTOL})
        print(f"note: {model.solver.name} rtol {GPU_CHECK_RTOL:g} for the Taylor test")
    if model.device == "gpu":
        print(f"device: {model.device} (the GPU path)")
    if any(f.heuristic for f in model.filters):
        print("note: the sensitivity filter is a heuristic; the exact gradient is checked")
    return _report_checks(check_model_gradients(model, x, direction), "partial_rho",
                          "gradient(s)")


def _check_shape_gradients(model, seed: int) -> int:
    """Taylor tests of the shape gradients along a smooth random motion of every node."""
    from femopt.shape.check import check_shape_gradients

    return _report_checks(check_shape_gradients(model, seed=seed), "partial_x",
                          "shape gradient(s)")


def _report_checks(checks, partial: str, what: str) -> int:
    """Print one line per Taylor-tested function (and, for a failure, the rates of its
    explicit term alone); 1 when any failed."""
    failed = 0
    for check in checks:
        res = check.result
        rates = "exact (linear)" if res.exact else " ".join(f"{r:.3f}" for r in res.rates)
        verdict = "ok" if check.ok else f"WRONG ({check.wrong_term})"
        failed += not check.ok
        print(f"{check.name:32s} rates {rates:24s} {verdict}")
        if not check.ok and check.partial is not None:
            p = check.partial
            prate = "exact" if p.exact else " ".join(f"{r:.3f}" for r in p.rates)
            print(f"  {'':30s} {partial} alone (states fixed): rates {prate}")
    if failed:
        print(f"{failed} {what} failed the Taylor test (rate should be about 2)",
              file=sys.stderr)
        return 1
    return 0


def cmd_plugins(args) -> int:
    from femopt.evaluation.device import component_paths
    from femopt.plugins.manager import get_registry, plugin_infos

    reg = get_registry()
    provided: dict[str, list[str]] = {}
    for kind, entries in reg.entries.items():
        for name, entry in sorted(entries.items()):
            item = f"{kind}:{name}"
            if kind in ("physics", "function", "filter", "optimizer", "solver"):
                # where it runs, from what it declares
                item += f"  (runs on: {', '.join(component_paths(kind, entry.cls))}"
                why = entry.cls.gpu_capability() if kind == "physics" else None
                item += f"; not on the GPU: {why})" if why else ")"
            provided.setdefault(entry.plugin, []).append(item)
    for info in plugin_infos():
        dist = f"{info.distribution} {info.version}".strip()
        print(f"{info.name}  ({dist}; {info.module})")
        for item in provided.get(info.name, []):
            print(f"    {item}")
    return 0


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import femopt

        parser.exit(message=f"femopt {femopt.__version__}\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="femopt", description="Finite-element topology optimization "
                                "from YAML problem files.")
    p.add_argument("--version", action=_VersionAction, help="show femopt's version and exit")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log what femopt decides and measures (-vv: debug details)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="optimize a problem file and write a results directory")
    r.add_argument("problem", help="problem file (YAML)")
    r.add_argument("--out", help="results directory (default: output.dir or results/NAME)")
    r.add_argument("--max-iter", type=_positive_int, help="iteration limit (overrides the file)")
    r.add_argument("--quiet", action="store_true", help="print nothing but errors")
    r.add_argument("--device", choices=DEVICES, help=DEVICE_HELP)
    r.add_argument("--force", action="store_true",
                   help="write into a directory that holds another problem's results or "
                   "other files (femopt's earlier files there are removed)")
    r.add_argument("--ranks", type=_positive_int, help=RANKS_HELP)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a problem file; report every error")
    v.add_argument("problem")
    v.set_defaults(func=cmd_validate)

    g = sub.add_parser("check-gradients",
                       help="Taylor test of every objective and constraint at a random design "
                       "(a shape design: along a smooth random node motion)")
    g.add_argument("problem")
    g.add_argument("--seed", type=int, default=0, help="random seed of the design and direction")
    g.add_argument("--device", choices=DEVICES, default="cpu",
                   help="the path whose gradients are checked: cpu (default), gpu (the GPU "
                   "path on the GPU) or auto")
    g.set_defaults(func=cmd_check_gradients)

    rs = sub.add_parser("resume", help="continue an interrupted run from its checkpoint.h5")
    rs.add_argument("result_dir", help="results directory of the run")
    rs.add_argument("--max-iter", type=_positive_int, help="iteration limit (counted from "
                    "the start of the run; overrides the file)")
    rs.add_argument("--quiet", action="store_true", help="print nothing but errors")
    rs.add_argument("--device", choices=DEVICES, help=DEVICE_HELP)
    rs.add_argument("--ranks", type=_positive_int, help=RANKS_HELP)
    rs.set_defaults(func=cmd_resume)

    ex = sub.add_parser("export", help="write the final design as a CAD part or drawing")
    ex.add_argument("result_dir", help="results directory of a finished run")
    ex.add_argument("--format", required=True,
                    help="stl, 3mf, obj, ply (3D, or 2D extruded), dxf, svg (2D), vtu, "
                         "vti (a structured grid)")
    ex.add_argument("--threshold", type=_threshold,
                    help="density of the part's boundary, in (0, 1) (default: output.threshold)")
    ex.add_argument("--smooth", type=_non_negative_int,
                    help="Taubin smoothing iterations (default: output.smooth)")
    ex.add_argument("--thickness", type=_positive_float,
                    help="extrusion thickness of a 2D design (default: the physics' thickness)")
    ex.add_argument("--out", help="output file (default: RESULT_DIR/design.<suffix>)")
    ex.add_argument("--force", action="store_true", help="overwrite an existing output file")
    ex.add_argument("--verify", action="store_true",
                    help="mesh and solve the exported part; compare its compliance and "
                    "volume with the optimized design's (writes verify.json)")
    ex.set_defaults(func=cmd_export)

    pl = sub.add_parser("plugins", help="list registered plugins and what they provide")
    pl.set_defaults(func=cmd_plugins)
    return p


def _configure_logging(verbose: int) -> None:
    """femopt's log records on stderr: warnings, with -v info, with -vv debug."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    log.setLevel(level)
    for old in [h for h in log.handlers if getattr(h, "femopt_cli", False)]:
        log.removeHandler(old)
    handler = logging.StreamHandler()  # today's sys.stderr
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    handler.femopt_cli = True
    log.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging(args.verbose)
    if argv is None:
        # the process ends with this command: spare it the collector's final pass over
        # every object still alive (4 s of CPU after loading a 10 MB problem file)
        atexit.register(gc.freeze)
    global _COMM
    _COMM = None
    from femopt.parallel.launch import FollowerExit

    try:
        from femopt.solvers.row_split import cpu_threads

        from femopt.backend import allocator_name

        cpu_threads()  # a bad FEMOPT_SPMV_THREADS is said before any work
        allocator_name()  # and a bad FEMOPT_GPU_ALLOCATOR
        with signals_interrupt():
            return int(args.func(args) or 0)
    except FollowerExit as exc:  # rank 0 said why
        return exc.code
    except ProblemError as exc:
        if _quiet_rank():
            return 2
        print(str(exc), file=sys.stderr)  # FILE:LINE:COL: key.path: message, one per line
        return 2
    except InputError as exc:
        if _quiet_rank():
            return 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FemoptError as exc:
        _stop_ranks(exc, exc.exit_code, f"error: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", EXIT_SIGINT)
        _stop_ranks(exc, code, interrupted_message(exc))
        print(interrupted_message(exc), file=sys.stderr)
        return code
    except Exception as exc:
        import traceback

        _stop_ranks(exc, 1, "".join(traceback.format_exception(exc)).rstrip())
        raise


def _quiet_rank() -> bool:
    """A rank other than 0 of a distributed run: bad input is the same on every rank,
    and rank 0 prints it."""
    if _COMM is not None:
        return not _COMM.root
    from femopt.parallel.comm import launched_rank

    return launched_rank() > 0  # under mpiexec before the communicator is known


def _stop_ranks(exc: BaseException, code: int, message: str) -> None:
    """A failure during a distributed run: stop every rank (rank 0 prints ``message``,
    naming itself; another rank names itself after a grace period)."""
    comm = _COMM
    if comm is None or comm.size == 1 or getattr(exc, "collective", False):
        return  # every rank stops here together
    from femopt.parallel.launch import fail

    if comm.root:
        message = f"{message}\nfemopt: rank 0 of {comm.size} stopped the run"
    fail(comm, exc, code, message)


if __name__ == "__main__":
    sys.exit(main())
