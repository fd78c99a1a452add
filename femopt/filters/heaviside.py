"""Heaviside projection with beta continuation (Wang, Lazarov, Sigmund 2011 form), a
pointwise projection: its chain rule comes from the scalar function by a dual number."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from femopt.filters.projection import ProjectionFilter
from femopt.plugins.registry import Options


class HeavisideOptions(Options):
    beta: float = Field(1.0, gt=0)
    """Initial sharpness."""
    eta: float = Field(0.5, gt=0, lt=1)
    """Threshold."""
    beta_max: float = Field(32.0, gt=0)
    """Sharpness at which continuation stops."""
    factor: float = Field(2.0, gt=1)
    """beta is multiplied by this at each continuation step."""
    every: int | None = Field(50, gt=0)
    """Step beta every this many iterations (also whenever the design has converged)."""

    @model_validator(mode="after")
    def _order(self):
        if self.beta_max < self.beta:
            raise ValueError("beta_max must be >= beta")
        return self


class Heaviside(ProjectionFilter):
    name = "heaviside"
    summary = "Smoothed Heaviside projection with beta continuation"
    Options = HeavisideOptions
    threshold = True
    """The projection has a threshold eta, so it can be evaluated at others (the robust
    formulation's eroded and dilated designs: :meth:`at_threshold`)."""

    def __init__(self, options: HeavisideOptions, mesh):
        super().__init__(options, mesh)
        self.beta = options.beta
        self._last_step = 0

    def projection(self, ops, x):
        return self.projection_at(ops, x, self.options.eta)

    def projection_at(self, ops, x, eta: float):
        """The projection of ``x`` at the threshold ``eta`` with the current beta."""
        b = self.beta
        den = math.tanh(b * eta) + math.tanh(b * (1 - eta))
        return (math.tanh(b * eta) + ops.tanh(b * (x - eta))) / den

    def at_threshold(self, eta: float) -> "ThresholdView":
        """This projection at the threshold ``eta``, following this filter's beta."""
        return ThresholdView(self, eta)

    def advance(self, iteration: int, change: float, tol: float) -> bool:
        if self.beta >= self.options.beta_max:
            return False
        every = self.options.every
        due = change < tol or (every is not None and iteration - self._last_step >= every)
        if not due:
            return False
        self.beta = min(self.beta * self.options.factor, self.options.beta_max)
        self._last_step = iteration
        return True

    def state(self) -> dict:
        return {"beta": self.beta}

    def state_dict(self) -> dict:
        return {"beta": self.beta, "last_step": self._last_step}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])
        self._last_step = int(state["last_step"])


class ThresholdView(ProjectionFilter):
    """A Heaviside projection evaluated at another threshold: one of the robust
    formulation's realizations. It reads its parent's beta, so continuation steps every
    realization at once; its chain rule is the parent's projection differentiated by a
    dual number, as for every projection."""

    name = "heaviside"

    def __init__(self, parent: Heaviside, eta: float):
        super().__init__(parent.options, parent.mesh)
        self.parent, self.eta = parent, eta

    def projection(self, ops, x):
        return self.parent.projection_at(ops, x, self.eta)
