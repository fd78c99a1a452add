"""Taylor test: the gradient is right when the first-order remainder shrinks as h^2.

r(h) = |J(x + h d) - J(x) - h dJ(x).d|; the rate log(r(h_k)/r(h_{k+1})) / log(h_k/h_{k+1})
is about 2 for a correct gradient and about 1 for a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class TaylorResult:
    rates: list[float]
    remainders: list[float]
    steps: list[float]
    exact: bool = False  # remainders at round-off: J is linear along the direction

    @property
    def rate(self) -> float:
        """The smallest of the observed rates (the conservative figure); inf when the
        first-order model is exact to round-off."""
        return float("inf") if self.exact else float(min(self.rates))

    def ok(self, low: float = 1.8, high: float = 2.2) -> bool:
        return self.exact or (low <= self.rate and max(self.rates) <= high)


def taylor_test(f: Callable[[np.ndarray], float], grad: np.ndarray, x: np.ndarray,
                direction: np.ndarray, h0: float = 1e-2, n: int = 4) -> TaylorResult:
    """Convergence rates of the first-order Taylor remainder of ``f`` at ``x``."""
    f0 = f(x)
    slope = float(grad @ direction)
    steps = [h0 / 2**k for k in range(n)]
    rem = [abs(f(x + h * direction) - f0 - h * slope) for h in steps]
    # a remainder this small is round-off of f itself: the linear model is exact
    noise = 1e-11 * (abs(f0) + abs(h0 * slope))
    if all(r <= noise for r in rem):
        return TaylorResult([float("inf")] * (n - 1), rem, steps, exact=True)
    rates = [float(np.log(rem[k] / rem[k + 1]) / np.log(steps[k] / steps[k + 1]))
             if rem[k] > 0 and rem[k + 1] > 0 else float("nan") for k in range(n - 1)]
    return TaylorResult(rates, rem, steps)


@dataclass
class GradientCheck:
    """The Taylor test of one function of a model, and which term is wrong if any."""

    name: str
    result: TaylorResult
    partial: TaylorResult | None = None  # the partial_rho term alone (states held fixed)

    @property
    def ok(self) -> bool:
        return self.result.ok()

    @property
    def wrong_term(self) -> str | None:
        """None when right; else 'partial_rho' or 'adjoint term' (lambda^T dK/drho u)."""
        if self.ok:
            return None
        if self.partial is not None and not self.partial.ok():
            return "partial_rho"
        return "adjoint term"


def check_model_gradients(model, x: np.ndarray, direction: np.ndarray, h0: float = 1e-2
                          ) -> list[GradientCheck]:
    """Taylor tests of the model's objective and constraints at ``x`` along
    ``direction``. A failing function is tested again with its states held fixed, which
    isolates the explicit term partial J/partial rho from the adjoint term."""
    names = model.value_names()
    _, terms = model.values_and_gradients(x, split=True)
    state = model.last_state
    checks = []
    for k, name in enumerate(names):
        pr, adj = terms[k]
        res = taylor_test(lambda y, k=k: model.values_and_gradients(y)[0][k], pr + adj, x,
                          direction, h0=h0)
        check = GradientCheck(name, res)
        if not res.ok():
            check.partial = taylor_test(
                lambda y, k=k: model.values_at_fixed_state(y, state)[k], pr, x, direction,
                h0=h0)
        checks.append(check)
    return checks
