"""nlopt's gradient-based algorithms (MMA/CCSA, SLSQP, L-BFGS, ...) behind femopt's loop.

nlopt asks for the objective and the constraints in separate callbacks, usually at the
same design; an :class:`_EvaluationCache` answers both from one ``problem.evaluate`` and
reports each distinct design once. nlopt works on host float64 arrays: the design goes
to the problem's backend for every evaluation and the gradients come back to the host.

Continuation (e.g. Heaviside beta) changes the problem, which invalidates nlopt's
internal model, so it runs in stages: when a stage converges and
``problem.advance_continuation`` steps a parameter, nlopt starts again from the design it
reached, until nothing is left to step or the iteration budget is spent.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import nlopt
import numpy as np
from pydantic import Field

from femopt.backend import array_namespace, to_host
from femopt.errors import InputError
from femopt.optimizers.base import DesignProblem, Evaluation, OptimizationResult
from femopt.plugins.registry import Component, Options

CONSTRAINT_TOL = 1e-8

# algorithm -> whether it handles inequality constraints
ALGORITHMS = {
    "LD_MMA": True,
    "LD_CCSAQ": True,
    "LD_SLSQP": True,
    "LD_LBFGS": False,
    "LD_TNEWTON_PRECOND_RESTART": False,
    "LD_VAR2": False,
}

Algorithm = Literal["LD_MMA", "LD_CCSAQ", "LD_SLSQP", "LD_LBFGS",
                    "LD_TNEWTON_PRECOND_RESTART", "LD_VAR2"]

CONVERGED_CODES = (nlopt.SUCCESS, nlopt.XTOL_REACHED, nlopt.FTOL_REACHED)


def result_message(code: int, tol: float, ftol_rel: float) -> str:
    """A sentence for one of nlopt's result codes."""
    messages = {
        nlopt.SUCCESS: "nlopt reported success",
        nlopt.STOPVAL_REACHED: "the objective reached the stop value",
        nlopt.FTOL_REACHED: f"relative objective change below ftol_rel {ftol_rel:g}",
        nlopt.XTOL_REACHED: f"design change below tol {tol:g}",
        nlopt.MAXEVAL_REACHED: "nlopt's evaluation limit was reached",
        nlopt.MAXTIME_REACHED: "nlopt's time limit was reached",
        nlopt.FAILURE: "nlopt failed (generic failure)",
        nlopt.INVALID_ARGS: "nlopt rejected its arguments",
        nlopt.OUT_OF_MEMORY: "nlopt ran out of memory",
        nlopt.ROUNDOFF_LIMITED: "roundoff errors limited nlopt's progress",
        nlopt.FORCED_STOP: "stopped",
    }
    return messages.get(code, f"nlopt returned the unknown result code {code}")


class _EvaluationCache:
    """One ``problem.evaluate`` and one ``problem.report`` per distinct design.

    Decides, after each report, whether nlopt must stop: the problem asked to
    (``"stopped"``), the iteration budget is spent (``"limit"``), or the design moved by
    less than ``tol`` since the previous evaluation of this stage (``"converged"``).
    """

    def __init__(self, problem: DesignProblem, x0: Any, max_iter: int, tol: float,
                 owner: Any = None, start: int = 0):
        self.problem = problem
        self.owner = owner  # the optimizer, handed to problem.end_iteration
        self.xp = array_namespace(x0)
        self.dtype = x0.dtype
        self.max_iter = max_iter
        self.tol = tol
        self.opt: nlopt.opt | None = None
        self.key: np.ndarray | None = None  # host design of the cached evaluation
        self.ev: Evaluation | None = None
        self.last: np.ndarray | None = None  # the last evaluated design (host)
        self.error: BaseException | None = None  # raised by the problem in a callback
        self.iteration = start
        self.stage_evaluations = 0
        self.change = math.inf
        self.stop_reason: str | None = None
        self.f_scale = 1.0
        self.g_scale: np.ndarray | None = None

    def new_stage(self, opt: nlopt.opt) -> None:
        """Start a stage: the problem may have changed, so nothing cached is valid."""
        self.opt = opt
        self.key = self.ev = None
        self.stage_evaluations = 0
        self.stop_reason = None
        self.g_scale = None

    def _scales(self, ev: Evaluation) -> None:
        """Fix, at a stage's first design, the factors that make each function's largest
        gradient entry 1. nlopt's CCSA methods take steps in proportion to the gradients;
        a density gradient is O(1/n) per variable, which would make every step tiny."""
        def inverse_max(a) -> float:
            m = float(np.max(np.abs(to_host(a)))) if np.size(a) else 0.0
            return 1.0 / m if m > 0 and np.isfinite(m) else 1.0

        self.f_scale = inverse_max(ev.df)
        m = len(to_host(ev.g))
        dg = np.reshape(to_host(ev.dg), (m, -1)) if m else np.zeros((0, 0))
        self.g_scale = np.array([inverse_max(row) for row in dg])

    def at(self, x_host: np.ndarray) -> Evaluation:
        if self.key is not None and np.array_equal(x_host, self.key):
            return self.ev
        key = np.array(x_host, dtype=float)  # nlopt may reuse its buffer
        x = self.xp.asarray(key, dtype=self.dtype)
        ev = self.problem.evaluate(x)
        self.iteration += 1
        self.stage_evaluations += 1
        if self.last is not None and key.size:
            self.change = float(np.max(np.abs(key - self.last)))
        else:
            self.change = math.inf
        self.key = self.last = key
        self.ev = ev
        if self.g_scale is None:
            self._scales(ev)
        if self.problem.report(self.iteration, x, ev, self.change):
            self._stop("stopped")
            return ev
        end_iteration = getattr(self.problem, "end_iteration", None)
        if end_iteration is not None:
            end_iteration(self.iteration, x, self.owner, False)
        if self.iteration >= self.max_iter:
            self._stop("limit")
        elif self.stage_evaluations >= 2 and self.change < self.tol:
            self._stop("converged")
        return ev

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.opt.force_stop()

    def _at_recording(self, x: np.ndarray) -> Evaluation:
        try:
            return self.at(x)
        except BaseException as exc:
            # nlopt re-raises it after optimize(); remembering it tells it apart from
            # nlopt's own failures
            self.error = exc
            raise

    def objective(self, x: np.ndarray, grad: np.ndarray) -> float:
        ev = self._at_recording(x)
        if grad.size:
            grad[:] = to_host(ev.df) * self.f_scale
        return float(ev.f) * self.f_scale

    def constraints(self, result: np.ndarray, x: np.ndarray, grad: np.ndarray) -> None:
        ev = self._at_recording(x)
        result[:] = to_host(ev.g) * self.g_scale
        if grad.size:
            grad[:] = np.reshape(to_host(ev.dg), grad.shape) * self.g_scale[:, None]


class NloptOptions(Options):
    algorithm: Algorithm = "LD_MMA"
    """nlopt algorithm; LD_MMA, LD_CCSAQ and LD_SLSQP handle constraints, the others only
    bounds."""
    max_iter: int = Field(200, gt=0)
    """Largest number of design evaluations, over all continuation stages."""
    tol: float = Field(0.01, gt=0)
    """Converged when no design variable changes by more than this between successive
    designs (also nlopt's xtol_abs)."""
    ftol_rel: float = Field(0.0, ge=0)
    """nlopt's relative objective tolerance; 0 turns the test off."""
    initial_step: float = Field(0.2, gt=0, le=1)
    """First step as a fraction of each variable's bound range (sets the initial moving
    asymptotes of LD_MMA/LD_CCSAQ; nlopt's own guess is far smaller for densities)."""


class NloptOptimizer(Component):
    """An nlopt algorithm run in continuation stages, one evaluation per design."""

    name = "nlopt"
    summary = "nlopt's gradient algorithms: LD_MMA, LD_CCSAQ, LD_SLSQP, LD_LBFGS, ..."
    Options = NloptOptions

    def __init__(self, options: NloptOptions):
        self.options = options

    def _make_opt(self, problem: DesignProblem, cache: _EvaluationCache) -> nlopt.opt:
        o = self.options
        n = problem.n
        opt = nlopt.opt(getattr(nlopt, o.algorithm), n)
        opt.set_lower_bounds(np.broadcast_to(to_host(problem.xmin), (n,)).astype(float))
        opt.set_upper_bounds(np.broadcast_to(to_host(problem.xmax), (n,)).astype(float))
        opt.set_min_objective(cache.objective)
        if problem.m:
            opt.add_inequality_mconstraint(cache.constraints, [CONSTRAINT_TOL] * problem.m)
        opt.set_xtol_abs(o.tol)
        span = np.broadcast_to(to_host(problem.xmax) - to_host(problem.xmin), (n,))
        # fixed (passive) variables have no range; nlopt needs a positive step anyway
        opt.set_initial_step(np.where(span > 0, o.initial_step * span, 1e-6).astype(float))
        if o.ftol_rel > 0:
            opt.set_ftol_rel(o.ftol_rel)
        return opt

    def state_dict(self) -> dict[str, Any]:
        """nlopt keeps its state inside the library: a resumed run starts a new stage from
        the checkpointed design (so it is not bitwise the uninterrupted run)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def check(self, problem: DesignProblem) -> None:
        """An algorithm for bounds only cannot take constraints (checked before anything
        is written)."""
        if problem.m and not ALGORITHMS[self.options.algorithm]:
            handles = ", ".join(k for k, v in ALGORITHMS.items() if v)
            raise InputError(
                f"nlopt algorithm {self.options.algorithm} handles bounds only, but the "
                f"problem has {problem.m} constraint(s); use one of {handles}"
            )

    def run(self, problem: DesignProblem, x0: Any, max_iter: int,
            start: int = 0) -> OptimizationResult:
        """Minimize from ``x0`` with at most ``max_iter`` evaluations (``start`` already
        done when resuming)."""
        o = self.options
        self.check(problem)
        xp = array_namespace(x0)
        cache = _EvaluationCache(problem, x0, max_iter, o.tol, owner=self, start=start)
        lower = np.broadcast_to(to_host(problem.xmin), (problem.n,))
        upper = np.broadcast_to(to_host(problem.xmax), (problem.n,))
        x_host = np.clip(np.asarray(to_host(x0), dtype=float), lower, upper)
        while True:
            if cache.iteration >= max_iter:
                return OptimizationResult(xp.asarray(x_host, dtype=x0.dtype), cache.iteration,
                                          False, f"iteration limit {max_iter} reached")
            opt = self._make_opt(problem, cache)
            cache.new_stage(opt)
            try:
                x_host = opt.optimize(x_host)
                code = opt.last_optimize_result()
            except nlopt.ForcedStop:
                code = nlopt.FORCED_STOP
                x_host = cache.last.copy()
            except nlopt.RoundoffLimited:
                code = nlopt.ROUNDOFF_LIMITED
                if cache.last is not None:
                    x_host = cache.last.copy()
            except Exception as exc:
                if cache.error is not None:
                    raise
                if isinstance(exc, ValueError):
                    raise InputError(f"{result_message(nlopt.INVALID_ARGS, o.tol, o.ftol_rel)} "
                                     f"({o.algorithm}, n={problem.n}, m={problem.m}): {exc}"
                                     ) from exc
                if not isinstance(exc, RuntimeError) or cache.last is None:
                    raise
                # nlopt's generic failure: keep the last design, it is still a design
                return OptimizationResult(
                    xp.asarray(cache.last, dtype=x0.dtype), cache.iteration, False,
                    f"{result_message(nlopt.FAILURE, o.tol, o.ftol_rel)}: {exc}")
            x = xp.asarray(x_host, dtype=x0.dtype)
            if cache.stop_reason == "stopped":
                return OptimizationResult(x, cache.iteration, False, "stopped")
            if cache.stop_reason == "limit":
                return OptimizationResult(x, cache.iteration, False,
                                          f"iteration limit {max_iter} reached")
            if cache.stop_reason == "converged":
                converged = True
                message = f"design change {cache.change:.3g} < tol {o.tol:g}"
            else:
                converged = code in CONVERGED_CODES
                message = result_message(code, o.tol, o.ftol_rel)
            stage_ended = converged or code == nlopt.ROUNDOFF_LIMITED
            if stage_ended and problem.advance_continuation(cache.iteration, cache.change):
                continue
            return OptimizationResult(x, cache.iteration, converged, message)
