"""The closed form of a function linear in the states and in the densities, which the
device paths evaluate without a per-iteration right-hand side: a function that can be
written this way declares it by returning one from :meth:`Function.linear_form`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from femopt.assembly.sparse_vector import add, scale


@dataclass
class LinearForm:
    """A function the device path evaluates: linear in the states and in rho,

        J = compliance * sum_c w_c f_c . u_c + sum_k sum_c s_k[c] a_k . u_c + v . rho,

    with w_c the load-case weights. Compliance is self-adjoint (lambda_c = -w_c u_c, no
    solve); each functional a_k needs one adjoint solve K mu_k = -a_k whatever the number
    of cases (lambda_c = ... + sum_k s_k[c] mu_k).

    Attributes:
        compliance: the coefficient c of the weighted compliance.
        functionals: (a_k, s_k (n_cases,)) pairs, a_k a full-dof host vector: an array
            or a :class:`~femopt.assembly.sparse_vector.SparseVector`.
        rho_weights: v as a per-cell host vector (an array, a constant view or a
            :class:`~femopt.assembly.sparse_vector.SparseVector`), or None.

    Scaling and adding keep sparse and constant vectors so (no vector of the problem's
    size is made of them), with the same numbers as the dense arithmetic.
    """

    compliance: float = 0.0
    functionals: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    rho_weights: np.ndarray | None = None

    def scaled(self, w: float) -> "LinearForm":
        return LinearForm(w * self.compliance, [(a, w * s) for a, s in self.functionals],
                          None if self.rho_weights is None else scale(self.rho_weights, w))

    def add(self, other: "LinearForm") -> "LinearForm":
        v = (self.rho_weights if other.rho_weights is None else other.rho_weights
             if self.rho_weights is None else add(self.rho_weights, other.rho_weights))
        return LinearForm(self.compliance + other.compliance,
                          self.functionals + other.functionals, v)

    @property
    def needs_state(self) -> bool:
        return self.compliance != 0.0 or bool(self.functionals)
