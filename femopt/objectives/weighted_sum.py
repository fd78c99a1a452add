"""A weighted sum of other functions: J = sum_k w_k J_k.

Each term is a function section of its own (``type`` plus its options) with a
``weight``; terms are validated through the registry like any section, so an error in a
term is located at ``objective.terms.<k>...``. Gradients add up: the explicit rho parts,
the adjoint loads dJ/du (one adjoint solve for the sum, by linearity) or, when every
term knows its adjoint state without a solve (compliance), those states.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from femopt.objectives.base import Function, State
from femopt.objectives.linear_form import LinearForm
from femopt.plugins.registry import Options


class WeightedSumOptions(Options):
    terms: list[dict[str, Any]] = Field(min_length=1)
    """The terms: each a function section ({type: ..., weight: ..., its options})."""

    # validated by the problem loader as nested function sections; 'weight' is theirs
    nested_sections: ClassVar[dict[str, tuple[str, frozenset[str]]]] = {
        "terms": ("function", frozenset({"type", "weight"}))}


class WeightedSum(Function):
    name = "weighted_sum"
    summary = "Weighted sum of functions: terms [{type: ..., weight: w, ...}, ...]"
    Options = WeightedSumOptions

    def __init__(self, options: WeightedSumOptions, model):
        super().__init__(options, model)
        self.terms: list[Function] = []
        self.weights: list[float] = []
        for section in options.terms:
            w = section.extra.get("weight")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) \
                    or w == 0:
                where = section.path + (("weight",) if "weight" in section.extra else ())
                raise model.loaded.error(where, "each term needs a finite, non-zero 'weight'"
                                         + (f" (got {w!r})" if w is not None else ""))
            self.terms.append(model.create_function(section))
            self.weights.append(float(w))
        self.needs_state = any(t.needs_state for t in self.terms)

    def _sum(self, parts: list[Any]) -> Any:
        out = None
        for w, p in zip(self.weights, parts):
            if p is not None:
                out = w * p if out is None else out + w * p
        return out

    terms_decide_paths = True  # on the GPU paths when every term is linear

    def linear_form(self) -> LinearForm | None:
        out = LinearForm()
        for w, term in zip(self.weights, self.terms):
            form = term.linear_form()
            if form is None:
                return None
            out = out.add(form.scaled(w))
        return out

    def value(self, state: State) -> float:
        return float(sum(w * t.value(state) for w, t in zip(self.weights, self.terms)))

    def rho_only_value(self, rho) -> float:
        return float(sum(w * t.rho_only_value(rho) for w, t in zip(self.weights, self.terms)))

    def partial_rho(self, state: State):
        return self._sum([t.partial_rho(state) for t in self.terms])

    def partial_x(self, state: State):
        return self._sum([t.partial_x(state) for t in self.terms])

    def partial_u(self, state: State):
        return self._sum([t.partial_u(state) if t.needs_state else None for t in self.terms])

    def adjoint_state(self, state: State):
        stateful = [t for t in self.terms if t.needs_state]
        lams = [t.adjoint_state(state) for t in stateful]
        if not stateful or any(lam is None for lam in lams):
            return None  # one solve with the summed partial_u instead
        by_term = iter(lams)
        return self._sum([next(by_term) if t.needs_state else None for t in self.terms])
