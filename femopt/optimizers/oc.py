"""Optimality criteria: the classic fixed-point update of compliance topology optimization.

For min f(x) s.t. g(x) <= 0 with one constraint, KKT says -df/dx_e = lambda dg/dx_e at an
interior optimum, so B_e = -df_e / (lambda dg_e) is 1 there. OC multiplies each variable by
B_e^eta (eta = 1/2 in the 88-line code of Andreassen et al., 2011), limits the change to
``move`` and the bounds, and finds lambda by bisection on the constraint, which is why the
constraint must be cheap to evaluate (a volume fraction, not a solve).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from femopt.backend import array_namespace, to_host
from femopt.errors import InputError
from femopt.optimizers.base import DesignProblem, Evaluation, StepOptimizer
from femopt.optimizers.oc_kernels import oc_update_linear
from femopt.plugins.registry import Component, Options

RATIO_FLOOR = 1e-30  # -df/dg below this (a gradient of the wrong sign) counts as this
RATIO_CEIL = 1e30  # caps B so that x * B^eta stays finite in float32 too
MAX_BISECTIONS = 256  # (l2 - l1)/(l1 + l2) never falls if the constraint is never active

NEEDS_ONE_CONSTRAINT = (
    "optimizer 'oc' needs exactly one constraint that needs no solve, such as volume; "
    "use mma or nlopt"
)


def oc_update(x, df, dg, xmin, xmax, constraint: Callable[[Any], float], *,
              move: float = 0.2, eta: float = 0.5, bisection_tol: float = 1e-3) -> Any:
    """One OC update with a bisection on the Lagrange multiplier.

    Args:
        x: (n,) current design; df: (n,) objective gradient; dg: (n,) gradient of the
            constraint; xmin, xmax: (n,) bounds (or scalars).
        constraint: value of the constraint g at a trial design (feasible when <= 0).
        move: largest change of a variable; eta: damping exponent.
        bisection_tol: bisection stops when (l2 - l1)/(l1 + l2) is at most this.

    Returns:
        The new design, in ``x``'s array module and dtype.
    """
    xp = array_namespace(x)
    tiny = RATIO_FLOOR
    safe_dg = xp.where(xp.abs(dg) > tiny, dg, tiny)
    ratio = xp.maximum(-df / safe_dg, tiny)
    lower = xp.maximum(x - move, xmin)
    upper = xp.minimum(x + move, xmax)
    l1, l2 = 0.0, 1e9
    x_new = x
    for _ in range(MAX_BISECTIONS):
        if (l2 - l1) / (l1 + l2) <= bisection_tol:
            break
        lmid = 0.5 * (l1 + l2)
        factor = xp.minimum(ratio / lmid, RATIO_CEIL) ** eta
        x_new = xp.clip(x * factor, lower, upper).astype(x.dtype)
        if constraint(x_new) > 0:
            l1 = lmid
        else:
            l2 = lmid
    return x_new


class OCOptions(Options):
    max_iter: int = Field(200, gt=0)
    """Largest number of design iterations."""
    tol: float = Field(0.01, gt=0)
    """Converged when no design variable changes by more than this in one iteration."""
    ftol: float | None = Field(None, gt=0)
    """Also converged when the objective changes by less than this (relative) in each of
    the last 5 iterations with every constraint met (off when not set); while a filter's
    continuation has a step left (a projection's beta below `beta_max`), such a stall
    takes that step instead, as a small design change does."""
    move: float = Field(0.2, gt=0)
    """Largest change of a design variable per iteration."""
    eta: float = Field(0.5, gt=0, le=1)
    """Damping exponent of the update factor (1/2 in the classic codes)."""
    bisection_tol: float = Field(1e-3, gt=0, lt=1)
    """Relative width (l2 - l1)/(l1 + l2) at which the multiplier bisection stops."""


class OC(StepOptimizer, Component):
    """Optimality criteria with a bisection on the multiplier of one cheap constraint."""

    name = "oc"
    device_arrays = True  # the update runs in the design's array module (GPU paths)
    distributed = True  # its sums over the design come from problem.reductions
    summary = "Optimality criteria (88-line code): one cheap constraint such as volume"
    Options = OCOptions
    # the bisection runs on raw objective and volume, as in the classic codes
    normalize_functions = False
    # B_e = -df_e / (lambda dg_e) assumes df <= 0 (compliance-like): an eigenvalue's
    # gradient changes sign where mass outweighs stiffness
    takes_eigenvalue_functions = False

    def check(self, problem: DesignProblem) -> None:
        """The problem must have the one cheap constraint OC needs, and an objective that
        depends on the state: OC adds material where -df/dg is large, which minimizes
        compliance or temperature; an objective of the densities alone (volume) only grows
        with material, and OC would stop at once, "converged" at the initial design."""
        objective = getattr(problem, "objective", None)
        if objective is not None and not objective.needs_state:
            raise InputError(f"optimizer 'oc' cannot minimize '{objective.name}', a function "
                             "of the densities alone (it trades a state objective such as "
                             "compliance against a volume constraint); use mma")
        if problem.m != 1:
            raise InputError(f"{NEEDS_ONE_CONSTRAINT} (the problem has {problem.m} constraints)")
        if problem.cheap_constraints(problem.xmin) is None:
            raise InputError(f"{NEEDS_ONE_CONSTRAINT} (this problem's constraint needs a solve)")

    def update(self, problem: DesignProblem, x: Any, ev: Evaluation, iteration: int) -> Any:
        xp = array_namespace(x)

        def constraint(x_trial):
            values = problem.cheap_constraints(x_trial)
            if values is None:
                raise InputError(NEEDS_ONE_CONSTRAINT)
            return float(to_host(values).ravel()[0])

        o = self.options
        dg = xp.reshape(xp.asarray(ev.dg), (-1,))
        linear = getattr(problem, "linear_constraint", None)
        form = linear() if linear is not None else None
        if form is not None:
            # g(x) = w . x + b: each bisection trial is one fused pass (no filter chain);
            # w None: the constraint's gradient is w (the problem keeps no copy)
            w, b = form
            w = dg if w is None else w
            x_new, _ = oc_update_linear(x, ev.df, dg, w, -b, problem.xmin, problem.xmax,
                                        move=o.move, eta=o.eta,
                                        bisection_tol=o.bisection_tol,
                                        reductions=getattr(problem, "reductions", None))
            return x_new
        return oc_update(x, ev.df, dg, problem.xmin, problem.xmax, constraint,
                         move=o.move, eta=o.eta, bisection_tol=o.bisection_tol)
