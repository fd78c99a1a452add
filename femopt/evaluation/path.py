"""What every evaluation backend provides, and the part they share: turning raw values
and gradients into what an optimizer sees.

A backend (:class:`EvaluationPath`) runs one design x through

    x -> filters -> rho (passive cells fixed) -> state solve -> function values
      -> adjoint solves -> dJ/drho -> chain rule through the filters -> dJ/dx

with its own arrays (NumPy on the CPU, NumPy or CuPy on the device paths). The scaling
of the objective by its first value, the constraints' normalisation and the heuristic
filters' rewrite of the objective gradient are written here once, for every backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.backend import array_namespace
from femopt.errors import PluginError, RunError
from femopt.objectives.base import State
from femopt.optimizers.base import Evaluation


class EvaluationPath:
    """The design chain of ``model`` on one backend. Subclasses implement
    :meth:`values_and_gradients`, :meth:`values_at_fixed_state` and
    :meth:`final_analysis`; the design chain is written here once, over the backend's
    own filter stages and passive arrays.

    Attributes:
        model: the built model (mesh, physics, filters, functions, bounds, solver).
        xp: the array module of the backend's fields (numpy, or cupy).
        stages: the filters as this backend runs them (the model's own on the CPU, their
            device twins on the GPU paths).
        passive_idx, passive_val: the passive cells and their densities, on ``xp``.
    """

    def __init__(self, model: Any, xp: Any = np, stages: list[Any] | None = None):
        self.model, self.xp = model, xp
        self.stages = list(model.filters) if stages is None else stages
        self.passive_idx = xp.asarray(model.passive_idx)
        self.passive_val = xp.asarray(model.passive_val, dtype=xp.float64)

    # -- the design chain ------------------------------------------------------------

    def physical(self, x: Any) -> tuple[Any, list[Any]]:
        """rho from x through the filters; also each filter's input (for the chain rule)."""
        inputs = []
        y = x
        for f in self.stages:
            inputs.append(y)
            y = f.forward(y)
        rho = y.astype(self.xp.float64, copy=True)
        rho[self.passive_idx] = self.passive_val
        return rho, inputs

    def chain(self, grad_rho: Any, inputs: list[Any]) -> Any:
        """dJ/dx from dJ/drho through the filters (passive cells get 0)."""
        g = grad_rho.copy()
        g[self.passive_idx] = 0.0
        for f, xin in zip(reversed(self.stages), reversed(inputs)):
            g = f.backward(xin, g)
        return g

    def modify_objective_gradient(self, x: Any, df: Any) -> Any:
        """The heuristic filters' rewrite of the objective gradient, in chain order."""
        for f in self.stages:
            if f.heuristic:
                df = f.modify_objective_gradient(x, df)
        return df

    # -- analysis ----------------------------------------------------------------------

    def values_and_gradients(self, x: Any, split: bool = False
                             ) -> tuple[list[float], list[Any]]:
        """Raw values of objective and constraints and their exact gradients w.r.t. x;
        with ``split`` each gradient is the pair (partial_rho term, adjoint term)."""
        raise NotImplementedError

    def values_at_fixed_state(self, x: Any, state: State) -> list[float]:
        """Function values at the densities of ``x`` with the states of ``state`` fixed."""
        raise NotImplementedError

    def final_analysis(self, x: Any) -> tuple[list[float], np.ndarray, State]:
        """Function values, densities and states at ``x`` (the latter two on the host)."""
        raise NotImplementedError

    def linear_constraint(self) -> tuple[Any, float] | None:
        """(w, b) when the one constraint is g(x) = w . x + b, else None."""
        return None

    def cheap_constraints(self, x: Any) -> np.ndarray:
        """Normalised constraint values from densities alone (every bound is rho-only)."""
        rho, _ = self.physical(x)
        return np.array([b.normalized(b.function.rho_only_value(rho))
                         for b in self.model.bounds])

    def _all_finite(self, a: Any) -> bool:
        """Whether every entry of ``a`` is finite (on every rank of a distributed run)."""
        return bool(array_namespace(a).isfinite(a).all())

    #: reductions over the design of a distributed run (None: the arrays are whole)
    reductions: Any = None

    # -- what the optimizer sees -------------------------------------------------------

    def evaluate(self, x: Any) -> Evaluation:
        """Objective and constraints at ``x``, scaled and normalised, with gradients."""
        return self.evaluation(x, *self.values_and_gradients(x))

    def evaluation(self, x: Any, values: list[float], grads: list[Any]) -> Evaluation:
        """What the optimizer sees from the raw values and gradients at ``x``: the
        objective divided by its first value (when the optimizer normalises), the
        heuristic filters' objective gradient, constraints g <= 0."""
        xp, m = array_namespace(x), self.model
        m.evaluations += 1
        f, df = values[0], grads[0]
        df = self.modify_objective_gradient(x, df)
        if not np.isfinite(f) or not self._all_finite(df):
            raise RunError(f"the objective or its gradient is not finite (objective {f})")
        if m.evaluations == 1 and m.normalize and f != 0:
            m.objective_scale = 1.0 / abs(f)
        g = xp.asarray([b.normalized(v) for b, v in zip(m.bounds, values[1:])],
                       dtype=xp.float64)
        dg = (xp.stack([b.sign_scale() * gr for b, gr in zip(m.bounds, grads[1:])])
              if m.bounds else xp.zeros((0, m.n)))
        info = {"objective": f, **{b.label: v for b, v in zip(m.bounds, values[1:])}}
        return Evaluation(f * m.objective_scale, df * m.objective_scale, g, dg, info)


def check_terms(model: Any, values: list[float], terms: list[tuple[Any, Any]],
                finite: Any = None) -> None:
    """Every function's gradient terms finite (a RunError naming the function, its term
    and the design iteration: a run-time failure, exit 1); ``finite(a)`` says whether an
    array is (default: all of its entries here)."""
    xp = array_namespace(*[t for pair in terms for t in pair])
    if finite is None:
        finite = lambda a: bool(xp.isfinite(a).all())  # noqa: E731
    for fn, (pr, adj) in zip(model.functions(), terms):
        for what, g in (("partial_rho", pr), ("adjoint term", adj)):
            if not finite(g):
                raise RunError(f"the gradient of function '{fn.name}' ({what}) is not "
                               f"finite at design iteration {len(model.history) + 1}")


def checked_values(model: Any, values: list[Any], functions: list[Any] | None = None
                   ) -> list[float]:
    """Function values as floats. A value that is not a number is a plugin's defect
    (PluginError); a non-finite number is a failure of the run at this design (RunError,
    exit 1), naming the function and the design iteration."""
    out = []
    for fn, v in zip(model.functions() if functions is None else functions, values):
        if not isinstance(v, (int, float, np.floating)):
            raise PluginError(f"function '{fn.name}' returned a value that is not a "
                              f"number: {v!r}")
        if not np.isfinite(v):
            raise RunError(f"function '{fn.name}' is not finite ({float(v)}) at design "
                           f"iteration {len(model.history) + 1}")
        out.append(float(v))
    return out
