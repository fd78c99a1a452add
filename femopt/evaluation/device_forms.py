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
    rho_weights: Any  # (n_cells,): a grid's one number at stride 0, else an array; or None
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


def integrand_functions(fn: Any) -> list[Any]:
    """The functions a device path evaluates by their ``cell_terms`` among ``fn`` and its
    terms (what :meth:`DevicePath._device_parts` decides: a linear form first)."""
    if fn.linear_form() is not None:
        return []
    if hasattr(fn, "cell_terms"):
        return [fn]
    return [f for term in getattr(fn, "terms", []) for f in integrand_functions(term)]


def integrand_bytes(model: Any, n_states: int, n_full: int = 0) -> int:
    """Device memory (bytes) of the integrand functions of ``model`` on a device path,
    beyond the path's per-cell estimate; ``n_states`` is the length of a state vector
    in the path's layout, ``n_full`` that of a full-dof vector the path gathers from and
    scatters to (the mesh path: n_dofs; the grid path gathers in its layout: 0).

    Once, when there is any: the dof index of every cell (n_cells, nd), int64. Per
    function of n_f cells (c load cases, nd dofs and nn nodes of dim coordinates per
    cell, float64 and int64 entries):

    - kept: its cells' index (n_f), their node coordinates (n_f, nn, dim), the dofs of
      its cells (n_f, nd), its adjoint states mu (c, n_states) when it reads the states;
    - per design: the gathered states (c, n_f, nd) and densities (n_f), the values and
      dJ/dvalues of the reduction (2 x (n_out, c, n_f, n_q)), the partials dJ/du_e
      (c, n_f, nd) and dJ/drho per case (c, n_f, the generated kernel's) and summed
      (n_f), dJ/drho on every cell (n_cells), the adjoint right-hand side
      (c, n_states), and on a path with full-dof vectors the states (c, n_full) it
      gathers from and the sum (c, n_full) it scatters to.

    Not counted: the reduction's temporaries (a few arrays of the values' size), a
    closed form's intermediate arrays (the stress p-norm's: a few of (c, n_f, n_voigt)),
    and for an integrand that does not trace, the dual-number pass that replaces the
    generated kernels (chunks of at most ``integrand.BUDGET`` entries per derivative
    array)."""
    fns = [f for fn in model.functions() for f in integrand_functions(fn)]
    if not fns:
        return 0
    mesh, f8 = model.mesh, 8
    n_cells, nn = mesh.cells.shape
    dim = mesh.points.shape[1]
    nd = nn * model.physics.dofs_per_node
    c = len(model.case_names)
    total = n_cells * nd * f8
    for fn in fns:
        cells = getattr(fn, "cells", None)
        n_f = n_cells if cells is None else int(np.size(cells))
        index = 8 if cells is None else np.asarray(cells).itemsize  # kept as it is
        n_out = getattr(getattr(fn, "reduction", None), "n_out", 1)
        n_q = getattr(fn, "n_points", 1)
        kept = n_f * index + n_f * (nn * dim + nd) * f8
        per_design = (c * n_f * nd + n_f + 2 * n_out * c * n_f * n_q + c * n_f * nd
                      + c * n_f + n_f + n_cells + 2 * c * n_full) * f8
        adjoint = 2 * c * n_states * f8 if fn.needs_state else 0
        total += kept + per_design + adjoint
    return total
