"""A weighted sum of other functions: J = sum_k w_k J_k.

Each term is a function section of its own (``type`` plus its options) with a
``weight``; terms are validated through the registry like any section, so an error in a
term is located at ``objective.terms.<k>...``. Gradients add up: the explicit rho parts,
the adjoint loads dJ/du (one adjoint solve for the sum, by linearity) or, when every
term knows its adjoint state without a solve (compliance), those states. A term of
eigenvalues (an eigenfrequency) has no value or partials here: the evaluation paths add
w_k J_k and w_k dJ_k/drho from their eigensolve (``EvaluationPath.modal_terms``), which
the constant weights make exact.
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
        # terms of eigenvalues (and sums of nothing else) have no value of their own: the
        # paths' eigensolve adds theirs (EvaluationPath.modal_terms); the rest is this
        self.static = [(w, t) for w, t in zip(self.weights, self.terms)
                       if not _only_modal(t)]
        self.has_eigen_terms = len(self.static) < len(self.terms) or any(
            getattr(t, "has_eigen_terms", False) for t in self.terms)

    def _sum(self, parts: list[Any]) -> Any:
        """sum_k w_k parts_k over the static terms (``parts`` in their order)."""
        out = None
        for (w, _), p in zip(self.static, parts):
            if p is not None:
                out = w * p if out is None else out + w * p
        return out

    terms_decide_paths = True  # on the GPU paths when every term is linear

    def linear_form(self) -> LinearForm | None:
        if self.has_eigen_terms:
            return None  # not linear in u and rho: a sum of parts on every path
        out = LinearForm()
        for w, term in zip(self.weights, self.terms):
            form = term.linear_form()
            if form is None:
                return None
            out = out.add(form.scaled(w))
        return out

    def value(self, state: State) -> float:
        """The static terms' weighted sum (a path adds the terms of eigenvalues')."""
        return float(sum(w * t.value(state) for w, t in self.static))

    def rho_only_value(self, rho) -> float:
        return float(sum(w * t.rho_only_value(rho) for w, t in self.static))

    def partial_rho(self, state: State):
        return self._sum([t.partial_rho(state) for _, t in self.static])

    def partial_x(self, state: State):
        return self._sum([t.partial_x(state) for _, t in self.static])

    def partial_u(self, state: State):
        return self._sum([t.partial_u(state) if t.needs_state else None
                          for _, t in self.static])

    def adjoint_state(self, state: State):
        stateful = [t for _, t in self.static if t.needs_state]
        lams = [t.adjoint_state(state) for t in stateful]
        if not stateful or any(lam is None for lam in lams):
            return None  # one solve with the summed partial_u instead
        by_term = iter(lams)
        return self._sum([next(by_term) if t.needs_state else None
                          for _, t in self.static])


def _only_modal(fn: Function) -> bool:
    """A function of eigenvalues, or a sum of nothing else."""
    if fn.eigen_problem() is not None:
        return True
    static = getattr(fn, "static", None)
    return static is not None and not static
