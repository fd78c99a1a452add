"""Outer reductions of an integrand function: cell values -> J, and dJ/d(values).

The values of an integrand are an array ``v`` of shape (n_out, n_cases, n_cells, n_q)
(n_out = 2 for a ratio, else 1; n_q = 1 unless the integrand runs at quadrature points).
A reduction returns J and dJ/dv of the same shape as ``v``, in closed form: the chain
rule through the integrand is done by dual numbers elsewhere.

With case weights w_c (all cases, or one case by name: :func:`case_weights`):

- ``sum``:   J = sum_c w_c sum_{e,q} v_ceq
- ``mean``:  J = sum_c w_c (1/N) sum_{e,q} v_ceq,   N = n_cells * n_q
- ``ratio``: J = sum_c w_c (sum_{e,q} a_ceq) / (sum_{e,q} b_ceq),  v = (a, b)
- ``pnorm``: J = (sum_{c,e,q} |v_ceq|^P)^(1/P)
- ``ks``:    J = (1/k) log sum_{c,e,q} exp(k v_ceq)   (an upper bound of the max)

The aggregations (``pnorm``, ``ks``) take every selected case alike (a maximum is not
weighted): the cases with w_c != 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from femopt.backend import array_namespace

KINDS = ("sum", "mean", "ratio", "pnorm", "ks")


@dataclass(frozen=True)
class Reduction:
    """One of :data:`KINDS` with its parameter (P of ``pnorm``, k of ``ks``)."""

    kind: str = "sum"
    param: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown reduction {self.kind!r} (known: {', '.join(KINDS)})")
        if self.kind == "pnorm" and not self.param >= 1.0:
            raise ValueError(f"a p-norm needs p >= 1 (got {self.param})")
        if self.kind == "ks" and not self.param > 0.0:
            raise ValueError(f"a KS aggregation needs a parameter > 0 (got {self.param})")

    @property
    def n_out(self) -> int:
        """Values per point the integrand returns: 2 (numerator, denominator) for a ratio."""
        return 2 if self.kind == "ratio" else 1

    def apply(self, v: Any, w: Any) -> tuple[float, Any]:
        """(J, dJ/dv) for values ``v`` (n_out, n_cases, n_cells, n_q) and case weights
        ``w`` (n_cases,); any array module."""
        xp = array_namespace(v)
        w = xp.asarray(w, dtype=v.dtype)
        if self.kind in ("sum", "mean"):
            scale = 1.0 if self.kind == "sum" else 1.0 / (v.shape[2] * v.shape[3])
            g = xp.broadcast_to(scale * w[None, :, None, None], v.shape)
            return float((v * g).sum()), g
        if self.kind == "ratio":
            a, b = v[0].sum(axis=(1, 2)), v[1].sum(axis=(1, 2))  # per case
            ga = (w / b)[:, None, None]
            gb = (-w * a / (b * b))[:, None, None]
            g = xp.stack([xp.broadcast_to(ga, v.shape[1:]), xp.broadcast_to(gb, v.shape[1:])])
            return float((w * a / b).sum()), g
        sel = (w != 0.0)[None, :, None, None]
        if self.kind == "pnorm":
            return _pnorm(xp, v, sel, self.param)
        return _ks(xp, v, sel, self.param)


def _pnorm(xp, v, sel, p: float) -> tuple[float, Any]:
    a = xp.where(sel, xp.abs(v), 0.0)
    top = float(a.max()) if a.size else 0.0
    if top == 0.0:
        return 0.0, xp.zeros_like(v)
    j = top * float(((a / top) ** p).sum()) ** (1.0 / p)  # scaled: no overflow at large P
    return j, xp.where(sel, xp.sign(v) * (a / j) ** (p - 1.0), 0.0)


def _ks(xp, v, sel, k: float) -> tuple[float, Any]:
    top = float(xp.where(sel, v, -xp.inf).max())
    e = xp.where(sel, xp.exp(k * (xp.where(sel, v, top) - top)), 0.0)
    s = float(e.sum())
    return top + math.log(s) / k, e / s
