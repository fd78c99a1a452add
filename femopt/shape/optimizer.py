"""The shape optimizer: gradient steps of the node positions, extended into the mesh,
projected onto the constraints' tangent, shortened until the mesh stays good.

One iteration at node positions X with values J, C_i and gradients dJ/dX, dC_i/dX:

1. Extension (:mod:`femopt.shape.extension`): the descent motion V_J = -E(dJ/dX) and
   each constraint's ascent motion W_i = s_i E(dC_i/dX), where s_i = +1 for ``max`` and
   ``equal``, -1 for ``min`` constraints, so that g_i = s_i (C_i - c_i) <= 0 (= 0).
2. Projection: with M_ik = s_i dC_i/dX . W_k over the active constraints (equalities,
   and inequalities at or beyond their bound that V_J would push further out),
   V = V_J - sum_k mu_k W_k with M mu = (s_i dC_i/dX . V_J): to first order the step
   keeps every active constraint where it is. An inequality whose multiplier comes out
   negative is released and the system solved again.
3. Restoration: R = sum_k nu_k W_k with M nu = -g over the equalities and violated
   inequalities brings them back to their bounds to first order.
4. Step: D = alpha V + beta R, the largest node motion at most ``max_step`` (beta = 1
   unless R alone is larger). A step that inverts a cell, or takes a cell's scaled
   Jacobian below ``min_quality`` (or below its current value where that is already
   lower), is rejected without a solve; so is one whose objective does not decrease
   enough (Armijo on the projected part, the restoration's predicted cost allowed).
   Each rejection halves alpha and beta, ``backtracks`` times at most.
   alpha grows by 1.5 after a step accepted at once.
5. Converged when the relative objective change of an accepted step is below ``tol``
   and every constraint holds within ``constraint_tol`` (relative to its bound).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from femopt.shape.extension import Extension
from femopt.shape.quality import scaled_jacobian

Evaluate = Callable[[np.ndarray], tuple[list[float], list[np.ndarray]]]


@dataclass
class ShapeConstraint:
    """A bound on a function: ``kind`` max (C <= limit), min (C >= limit) or equal."""

    label: str
    kind: str
    limit: float

    @property
    def sign(self) -> float:
        return -1.0 if self.kind == "min" else 1.0

    def scale(self) -> float:
        return 1.0 / abs(self.limit) if self.limit != 0 else 1.0

    def g(self, value: float) -> float:
        """s (C - c): <= 0 when an inequality holds, 0 when an equality does."""
        return self.sign * (value - self.limit)


@dataclass
class ShapeStep:
    """One accepted iteration."""

    iteration: int
    values: list[float]
    change: float  # largest node motion of the step
    quality: float  # smallest scaled Jacobian after the step
    backtracks: int  # rejected trial steps before this one
    seconds: float


@dataclass
class ShapeResult:
    points: np.ndarray
    values: list[float]
    iterations: int
    converged: bool
    message: str
    initial_values: list[float] = field(default_factory=list)
    steps: list[ShapeStep] = field(default_factory=list)


def largest_motion(v: np.ndarray) -> float:
    return float(np.linalg.norm(v, axis=1).max()) if v.size else 0.0


class ShapeOptimizer:
    """Moves the nodes of a mesh along the extended shape gradient (see module docstring).

    Args:
        cells, cell_type: the mesh topology (fixed during the run).
        extension: the extension operator.
        constraints: bounds on functions 1.. of ``evaluate`` (function 0 is the objective).
        max_step: the largest node motion of one step (length units).
        min_quality: smallest scaled Jacobian a step may leave in a cell.
        tol, constraint_tol, backtracks: see the module docstring.
    """

    name = "shape"

    def __init__(self, cells: np.ndarray, cell_type: str, extension: Extension,
                 constraints: list[ShapeConstraint], max_step: float, min_quality: float,
                 tol: float = 1e-5, constraint_tol: float = 1e-3, backtracks: int = 10):
        self.cells, self.cell_type = cells, cell_type
        self.extension = extension
        self.constraints = constraints
        self.max_step, self.min_quality = max_step, min_quality
        self.tol, self.constraint_tol, self.backtracks = tol, constraint_tol, backtracks

    def quality(self, points: np.ndarray) -> np.ndarray:
        return scaled_jacobian(points, self.cells, self.cell_type)

    def feasible(self, values: list[float]) -> bool:
        for c, v in zip(self.constraints, values[1:]):
            g = c.g(v) * c.scale()
            if g > self.constraint_tol or (c.kind == "equal" and g < -self.constraint_tol):
                return False
        return True

    def direction(self, values: list[float], grads: list[np.ndarray], points: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The projected descent motion V, the restoration motion R at ``points``, and the
        multipliers mu (zero for a constraint left out of the projection)."""
        motions = self.extension.extend(points, grads)
        v = -motions[0]
        cons = self.constraints
        w = [c.sign * m for c, m in zip(cons, motions[1:])]
        dg = [c.sign * gr for c, gr in zip(cons, grads[1:])]
        g = np.array([c.g(val) for c, val in zip(cons, values[1:])])
        mult = np.zeros(len(cons))
        if not cons:
            return v, np.zeros_like(v), mult
        m = np.array([[float(np.sum(dgi * wk)) for wk in w] for dgi in dg])
        push = np.array([float(np.sum(dgi * v)) for dgi in dg])
        near = np.array([c.g(val) * c.scale() >= -self.constraint_tol
                         for c, val in zip(cons, values[1:])])
        active = [i for i, c in enumerate(cons)
                  if c.kind == "equal" or (near[i] and push[i] > 0) or g[i] > 0]
        proj = v
        for _ in range(len(cons) + 1):
            if not active:
                break
            sub = np.ix_(active, active)
            mu = np.linalg.lstsq(m[sub], push[active], rcond=None)[0]
            released = [i for i, mi in zip(active, mu)
                        if cons[i].kind != "equal" and mi < 0]
            if not released:
                proj = v - sum(mi * w[i] for i, mi in zip(active, mu))
                mult[active] = mu
                break
            active = [i for i in active if i not in released]
        restore = [i for i, c in enumerate(cons) if c.kind == "equal" or g[i] > 0]
        r = np.zeros_like(v)
        if restore:
            sub = np.ix_(restore, restore)
            nu = np.linalg.lstsq(m[sub], -g[restore], rcond=None)[0]
            r = sum(ni * w[i] for i, ni in zip(restore, nu))
        return proj, r, mult

    def lagrangian(self, values: list[float], mult: np.ndarray) -> float:
        """J + sum_k mu_k g_k: the merit of the line search, so that the objective a
        restoration costs, paid for with the constraint it restores, is no increase."""
        return values[0] + sum(m * c.g(v) for m, c, v in zip(mult, self.constraints,
                                                            values[1:]))

    def run(self, evaluate: Evaluate, points: np.ndarray, max_iter: int,
            report: Callable[[ShapeStep, np.ndarray], None] | None = None,
            values_at: Callable[[np.ndarray], list[float]] | None = None,
            gradients: Callable[[], list[np.ndarray]] | None = None) -> ShapeResult:
        """Optimize from node positions ``points`` for at most ``max_iter`` iterations.
        ``report(step, points)`` is called after every accepted step. With ``values_at``
        (function values at positions) and ``gradients`` (the derivatives at the positions
        ``values_at`` saw last), a trial step is judged on its values alone and the
        gradients are computed for accepted steps only."""
        split = values_at is not None and gradients is not None
        x = np.array(points, dtype=float, copy=True)
        t_last = time.perf_counter()
        values, grads = evaluate(x)
        initial = list(values)
        q = self.quality(x)
        alpha: float | None = None
        steps: list[ShapeStep] = []
        message, converged = f"iteration limit {max_iter} reached", False
        for it in range(1, max_iter + 1):
            v, r, mult = self.direction(values, grads, x)
            size_v, size_r = largest_motion(v), largest_motion(r)
            if size_v == 0 and size_r == 0:
                message, converged = "the gradient vanishes on the moving boundary", True
                break
            cap = self.max_step / size_v if size_v > 0 else 0.0
            alpha = cap if alpha is None else min(alpha, cap)
            beta = min(1.0, self.max_step / size_r) if size_r > 0 else 0.0
            # slopes of the merit J + mu . g along V and R
            dl = grads[0] + sum(m * c.sign * gr for m, c, gr in zip(mult, self.constraints,
                                                                     grads[1:]))
            slope, rest = float(np.sum(dl * v)), float(np.sum(dl * r))
            merit = self.lagrangian(values, mult)
            accepted = None
            reasons = []
            for tries in range(self.backtracks + 1):
                step = alpha * v + beta * r
                trial = x + step
                q_try = self.quality(trial)
                if np.any(q_try <= 0) or np.any(q_try < np.minimum(self.min_quality, q)):
                    reasons.append("quality")
                else:
                    if split:
                        values_t, grads_t = values_at(trial), None
                    else:
                        values_t, grads_t = evaluate(trial)
                    allowed = 1e-4 * alpha * slope + beta * rest
                    drop = self.lagrangian(values_t, mult) - merit
                    if drop <= allowed + 1e-12 * abs(values[0]):
                        accepted = (trial, q_try, values_t, grads_t, step, tries)
                        break
                    reasons.append("no decrease")
                alpha *= 0.5
                beta *= 0.5
            if accepted is None:
                why = " and ".join(sorted(set(reasons)))
                message = (f"no acceptable step after {self.backtracks} halvings ({why}) "
                           f"at iteration {it}")
                converged = set(reasons) == {"no decrease"} and self.feasible(values)
                break
            trial, q, values_t, grads_t, step, tries = accepted
            if grads_t is None:
                grads_t = gradients()
            change = abs(values_t[0] - values[0]) / max(abs(values[0]), 1e-300)
            x, values, grads = trial, values_t, grads_t
            now = time.perf_counter()
            rec = ShapeStep(it, list(values), largest_motion(step), float(q.min()), tries,
                            now - t_last)
            t_last = now
            steps.append(rec)
            if report is not None:
                report(rec, x)
            if tries == 0:
                alpha *= 1.5
            if change < self.tol and self.feasible(values):
                message = f"converged: relative objective change {change:.2e} < tol {self.tol:g}"
                converged = True
                break
        return ShapeResult(x, list(values), len(steps), converged, message, initial, steps)
