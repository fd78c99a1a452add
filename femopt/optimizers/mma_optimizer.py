"""The MMA optimizer component: options, the state kept between iterations (for
checkpoints) and the step, through :func:`femopt.optimizers.mma.mma_step`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from femopt.backend import array_namespace
from femopt.optimizers.base import DesignProblem, Evaluation, StepOptimizer
from femopt.optimizers.mma import LocalSums, mma_step
from femopt.plugins.registry import Component, Options


class MMAOptions(Options):
    max_iter: int = Field(200, gt=0)
    """Largest number of design iterations."""
    tol: float = Field(0.01, gt=0)
    """Converged when no design variable changes by more than this in one iteration."""
    ftol: float | None = Field(None, gt=0)
    """Also converged when the objective changes by less than this (relative) in each of
    the last 5 iterations with every constraint met (off when not set); while a filter's
    continuation has a step left (a projection's beta below `beta_max`), such a stall
    takes that step instead, as a small design change does."""
    move: float = Field(0.5, gt=0, le=1)
    """Largest change of a variable per iteration, as a fraction of its bound range."""
    asyinit: float = Field(0.5, gt=0, le=1)
    """Initial distance of the asymptotes from the design, as a fraction of the bound range."""
    asyincr: float = Field(1.2, ge=1)
    """Factor that widens the asymptotes of a variable that moved the same way twice."""
    asydecr: float = Field(0.7, gt=0, le=1)
    """Factor that narrows the asymptotes of a variable that oscillated."""
    c: float = Field(1000.0, gt=0)
    """Penalty on the artificial variables that keep the subproblem feasible; it must
    exceed the constraints' Lagrange multipliers."""


class MMA(StepOptimizer, Component):
    """Svanberg's Method of Moving Asymptotes for m inequality constraints.

    State between iterations (the two previous iterates and the asymptotes) lives in
    ``xold1``, ``xold2``, ``low`` and ``upp``; ``lam`` holds the last multipliers.
    """

    name = "mma"
    device_arrays = True  # the update runs in the design's array module (GPU paths)
    worst_case = True  # minimizes the largest of several objectives (robust problems)
    distributed = True  # its sums over the design come from problem.reductions
    summary = "Method of Moving Asymptotes (Svanberg): any number of constraints"
    Options = MMAOptions

    def __init__(self, options: MMAOptions):
        super().__init__(options)
        self.xold1 = self.xold2 = self.low = self.upp = self.lam = None

    STATE = ("xold1", "xold2", "low", "upp", "lam")

    def reset(self, problem: DesignProblem | None = None, x: Any = None) -> None:
        """Forget the previous iterates and asymptotes."""
        self.xold1 = self.xold2 = self.low = self.upp = self.lam = None

    def state_dict(self) -> dict[str, Any]:
        """The two previous iterates, the asymptotes and the last multipliers (host
        arrays; None where not set yet)."""
        from femopt.backend import to_host

        return {k: None if getattr(self, k) is None else to_host(getattr(self, k))
                for k in self.STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state; host arrays move to the design's backend in ``mma_step``."""
        for k in self.STATE:
            setattr(self, k, state.get(k))

    def update(self, problem: DesignProblem, x: Any, ev: Evaluation, iteration: int) -> Any:
        o = self.options
        xp = array_namespace(x)
        n = x.shape[0]
        xmin = xp.broadcast_to(xp.asarray(problem.xmin, dtype=x.dtype), (n,))
        xmax = xp.broadcast_to(xp.asarray(problem.xmax, dtype=x.dtype), (n,))
        # variables held fixed (passive cells: xmin == xmax) stay out of the subproblem,
        # whose asymptotes would otherwise collapse onto them
        free = xp.flatnonzero(xmax > xmin)
        if free.size == n:  # nothing held fixed: work on the arrays themselves
            free = slice(None)
        if self.low is None:
            self.low, self.upp = xp.zeros_like(x), xp.zeros_like(x)
        sub = (lambda a: None if a is None else a[free])  # noqa: E731
        g, a = ev.g, None
        if ev.worst_case:
            g, a = worst_case_rows(ev.g, ev.worst_case)
        reductions = getattr(problem, "reductions", None)
        sums = LocalSums if reductions is None else reductions.subset(free)
        step = mma_step(
            x[free], xmin[free], xmax[free], ev.df[free], g, ev.dg[:, free], a=a,
            xold1=sub(self.xold1), xold2=sub(self.xold2),
            low=None if self.xold1 is None else self.low[free],
            upp=None if self.xold1 is None else self.upp[free],
            move=o.move, asyinit=o.asyinit, asyincr=o.asyincr, asydecr=o.asydecr, c=o.c,
            sums=sums,
        )
        self.xold2 = self.xold1
        self.xold1 = x.copy()
        self.low[free], self.upp[free] = step.low, step.upp
        self.lam = step.lam
        x_new = x.copy()
        x_new[free] = step.x
        return x_new


def worst_case_rows(g: Any, k: int) -> tuple[Any, Any]:
    """The constraint values and weights a_i of MMA's min-max form: the first ``k`` rows
    of ``g`` are objectives f_k, bounded by MMA's variable z (a_i = 1) whose weight a0 = 1
    makes it the subproblem's objective. The subproblem keeps z >= 0, so the rows are
    shifted by a constant well above their magnitude: a constant changes neither the
    convex approximations nor which x is optimal, only z."""
    xp = array_namespace(g)
    shift = 10.0 * (1.0 + float(xp.max(xp.abs(g[:k]))))
    a = xp.zeros(g.shape[0], dtype=xp.float64)
    a[:k] = 1.0
    g = g.astype(xp.float64, copy=True)
    g[:k] += shift
    return g, a
