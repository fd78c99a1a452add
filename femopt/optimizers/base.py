"""The interface between optimizers and the problem they optimize.

An optimizer sees a :class:`DesignProblem`: n design variables with bounds, m inequality
constraints ``g_i(x) <= 0`` (already normalized, e.g. ``volume/limit - 1``) and one
objective ``f(x)`` (scaled so that a typical value is O(1) to O(100)). One call of
``evaluate`` gives values and gradients of all of them (one forward and one adjoint
solve). Every optimizer calls ``report`` once per design iteration; ``report`` returns True
when the run must stop (iteration limit, convergence handled by the caller, user stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol



@dataclass
class Evaluation:
    """Values and gradients at one design (arrays live on the problem's backend)."""

    f: float
    df: Any  # (n,)
    g: Any  # (m,)
    dg: Any  # (m, n)
    info: dict = field(default_factory=dict)  # unscaled values for logging
    worst_case: int = 0
    """The first ``worst_case`` rows of ``g`` and ``dg`` are not constraints but the
    objective of each realization of a robust problem, f_k (scaled; ``df`` is zero): the
    optimizer minimizes their largest, min z subject to f_k(x) <= z. Only optimizers that
    declare ``worst_case = True`` receive such evaluations."""


class DesignProblem(Protocol):
    n: int
    m: int
    xmin: Any  # (n,)
    xmax: Any  # (n,)

    def evaluate(self, x: Any) -> Evaluation:
        """Objective, constraints and their gradients at ``x``."""

    def cheap_constraints(self, x: Any) -> Any | None:
        """Constraint values at ``x`` when none needs a solve (e.g. only volume), else None.
        Used by OC's bisection."""

    def linear_constraint(self) -> tuple[Any, float] | None:
        """Optional: (w, b) when the one constraint is linear, g(x) = w . x + b (a volume
        through a linear filter chain); OC's bisection then evaluates it in the same pass
        as each trial update. w may be None: the constraint's gradient dg is w (as for
        any linear g), so the problem need not keep a copy. None (or no such method): OC
        calls ``cheap_constraints``."""

    def advance_continuation(self, iteration: int, change: float) -> bool:
        """Called once per iteration: step continuation parameters (e.g. Heaviside beta)
        when due (every k iterations, or when ``change`` is small); True if the problem
        changed, which also means the run has not converged yet."""

    def report(self, iteration: int, x: Any, ev: Evaluation, change: float) -> bool:
        """Record one design iteration; True means stop now."""

    def end_iteration(self, iteration: int, x: Any, optimizer: Any, converged: bool) -> None:
        """Called when an iteration is complete (after any continuation step), with the
        optimizer whose ``state_dict()`` a checkpoint keeps. Optional."""


@dataclass
class OptimizationResult:
    x: Any
    iterations: int
    converged: bool
    message: str


FTOL_WINDOW = 5
FEASIBLE = 1e-3  # a constraint g = value/limit - 1 counts as met up to this


def objective_stalled(objectives: list[float], ftol: float) -> bool:
    """True when each of the last FTOL_WINDOW steps of ``objectives`` is below ``ftol``
    relative to the value it starts from."""
    if len(objectives) <= FTOL_WINDOW:
        return False
    last = objectives[-FTOL_WINDOW - 1:]
    return all(abs(b - a) <= ftol * max(abs(a), 1e-300) for a, b in zip(last, last[1:]))


class StepOptimizer:
    """Shared loop of optimizers that make one update per evaluation (OC, MMA).

    Subclasses implement ``update(x, ev, iteration) -> x_new``. The run stops when the
    largest design change is below ``tol``, or (with ``ftol`` set) when the objective has
    changed by less than ``ftol`` (relative) in each of the last :data:`FTOL_WINDOW`
    iterations with every constraint met, and no continuation step is pending; or after
    ``max_iter`` iterations.
    """

    def __init__(self, options: Any):
        self.options = options

    def check(self, problem: DesignProblem) -> None:
        """Raise InputError when this optimizer cannot take ``problem`` (called before
        anything is written)."""

    def reset(self, problem: DesignProblem, x: Any) -> None:
        """Forget history (called at the start and after a continuation step)."""

    def state_dict(self) -> dict[str, Any]:
        """What the optimizer carries from one iteration to the next (arrays and numbers;
        None for an entry not set yet). Empty for a stateless optimizer such as OC."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (entries missing mean None)."""

    def update(self, problem: DesignProblem, x: Any, ev: Evaluation, iteration: int) -> Any:
        raise NotImplementedError

    def run(self, problem: DesignProblem, x0: Any, max_iter: int,
            start: int = 0) -> OptimizationResult:
        """Iterate from ``x0``; ``start > 0`` resumes after iteration ``start`` with the
        state already loaded by :meth:`load_state_dict` (nothing is reset). ``x0`` is read,
        never written: it may be the model's own start (a constant view on a device).

        On the CPU the loop runs with one BLAS thread: its products and dots (OC's
        bisection calls the volume's dot product dozens of times per iteration) are too
        small for a thread pool, which on shared cores made them 100x slower."""
        from femopt.backend import array_namespace
        from femopt.backend.threads import single_blas_thread

        with single_blas_thread(array_namespace(x0)):
            return self._run(problem, x0, max_iter, start)

    def _run(self, problem: DesignProblem, x0: Any, max_iter: int,
             start: int) -> OptimizationResult:
        from femopt.backend import array_namespace

        xp = array_namespace(x0)
        x = x0.copy()
        self.check(problem)
        if start == 0:
            self.reset(problem, x)
        tol = self.options.tol
        ftol = getattr(self.options, "ftol", None)
        end_iteration = getattr(problem, "end_iteration", None)
        reductions = getattr(problem, "reductions", None)
        history = getattr(problem, "history", None)  # a resumed run's earlier iterations
        objectives = [r.objective for r in history] if history is not None else []
        for it in range(start + 1, max_iter + 1):
            ev = problem.evaluate(x)
            x_new = self.update(problem, x, ev, it)
            change = max_change(x_new, x)
            if reductions is not None:  # a distributed run: the largest on any rank
                change = reductions.max(change)
            x = x_new
            if problem.report(it, x, ev, change):
                return OptimizationResult(x, it, False, "stopped")
            objectives.append(history[-1].objective if history else float(ev.f))
            stalled = (ftol is not None and objective_stalled(objectives, ftol)
                       and (problem.m == 0 or float(xp.max(ev.g[ev.worst_case:])) <= FEASIBLE))
            # a stalled objective, like a small change, takes a pending continuation step
            stepped = problem.advance_continuation(it, 0.0 if stalled else change)
            if stepped:
                self.reset(problem, x)
                objectives.clear()
            converged = not stepped and (change < tol or stalled)
            if end_iteration is not None:
                end_iteration(it, x, self, converged)
            if converged:
                message = (converged_message(change, tol) if change < tol else
                           f"objective changed by less than ftol {ftol:g} in each of the "
                           f"last {FTOL_WINDOW} iterations, constraints met")
                return OptimizationResult(x, it, True, message)
            ev = None  # this design's gradients are not alive during the next's
        return OptimizationResult(x, max_iter, False, f"iteration limit {max_iter} reached")


CHANGE_SLICE = 2**22  # design variables per slice of max |x_new - x|


def max_change(x_new: Any, x: Any) -> float:
    """max |x_new - x| (0 for no variables), slice by slice: no array of the design's
    size beside the two designs (a maximum is exact: the whole array's number, a NaN
    kept as NaN)."""
    from femopt.backend import array_namespace

    xp = array_namespace(x)
    out = None
    for a in range(0, x.size, CHANGE_SLICE):
        d = x_new[a:a + CHANGE_SLICE] - x[a:a + CHANGE_SLICE]
        m = xp.max(xp.abs(d, out=d))
        out = m if out is None else xp.maximum(out, m)
    return 0.0 if out is None else float(out)


def converged_message(change: float, tol: float) -> str:
    return f"design change {change:.3g} < tol {tol:g}"

