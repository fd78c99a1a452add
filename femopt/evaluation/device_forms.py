"""Functions on the device paths: a linear form (:class:`~femopt.objectives.linear_form.
LinearForm`) placed in a path's state layout with its functionals grouped into as few
adjoint solves as their case weights allow, or an integrand function whose partials come
from its ``cell_terms`` at every design."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from femopt.objectives.linear_form import LinearForm


@dataclass
class DeviceForm:
    """One function on the device. For a linear form: functionals in the states' layout
    (zero on supported dofs), merged where their case weights are proportional, so each
    group g is one adjoint solve K mu_g = -a_g. For an integrand function
    (``integrand``): one adjoint solve per load case, its right-hand side from the
    function's partials. ``mu`` keeps the last solutions (warm starts)."""

    compliance: float
    a: Any  # (n_groups, n_states), or None
    s: np.ndarray  # (n_cases, n_groups) case weights of each group
    rho_weights: Any  # (n_cells,) or None
    mu: Any = None  # the last adjoint solutions
    solved: bool = False
    integrand: Any = None  # the Function, when it has no linear form
    terms: Any = None  # its (value, d_ue, d_rho) at the current design
    active: bool = True  # an integrand function's dJ/du is not zero at this design
    cells: Any = None  # the cells it covers (device indices), set on first use
    coords: Any = None  # their node coordinates (device)

    @property
    def needs_state(self) -> bool:
        if self.integrand is not None:
            return bool(self.integrand.needs_state)
        return self.compliance != 0.0 or self.a is not None


def group_functionals(form: LinearForm, to_states: Callable[[np.ndarray], np.ndarray],
                      n_cases: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(a (n_groups, n_states) or None, s (n_cases, n_groups)): the functionals of
    ``form`` in the states' layout, summed where their case weights are proportional."""
    groups: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray]] = {}
    for a, s in form.functionals:
        ref = float(s[int(np.argmax(np.abs(s)))])
        if ref == 0.0:
            continue
        key = tuple(s / ref)
        ag = to_states(a) * ref
        old = groups.get(key)
        groups[key] = (ag if old is None else old[0] + ag, s / ref)
    if not groups:
        return None, np.zeros((n_cases, 0))
    return (np.stack([g[0] for g in groups.values()]),
            np.stack([g[1] for g in groups.values()], axis=1))
