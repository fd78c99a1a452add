"""The robust formulation: one design, three realizations.

The filtered design x~ is projected at three thresholds (Sigmund 2009; Wang, Lazarov and
Sigmund 2011): rho_e = P(x~; eta_e) (eroded), rho_i = P(x~; eta) (intermediate, the
blueprint) and rho_d = P(x~; eta_d) (dilated), eta_d < eta < eta_e. Each realization
runs the rest of the chain, its own state solve and every function; the optimizer sees

    min z   subject to   f(rho_k(x)) <= z  (k = e, i, d),   g_j(rho_{r_j}(x)) <= 0,

MMA's own min-max form (its variable z with a_k = 1). A volume constraint bounds the
dilated design (``volume_on: dilated``) with its limit V* scaled by V(rho_d)/V(rho_i)
every ``volume_every`` iterations, so that the intermediate design has the volume V*
asked for; other constraints bound the intermediate design.

Where it lives: :class:`~femopt.evaluation.path.EvaluationPath` runs the realizations
through the backend's one evaluation of a physical design (``design_terms``), and each
gradient row goes back through its realization's chain rule. The CPU and the device
paths share all of it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

REALIZATIONS = ("eroded", "intermediate", "dilated")
INTERMEDIATE = 1


class RobustDesign:
    """The three realizations of a model's design chain.

    Args:
        options: the problem's ``design.robust`` section.
        filters: the model's filter chain; ``index`` is the projection's place in it.
        bounds: the model's constraints (each bounds one realization).

    Attributes:
        etas: the thresholds (eroded, intermediate, dilated).
        views: the projection at each threshold (they follow its continuation).
        on: per bound, the realization it is evaluated on (0, 1, 2).
        pending: the dilated volume limits are rescaled at the next evaluation.
    """

    def __init__(self, options: Any, filters: list[Any], index: int, bounds: list[Any],
                 radius: float | None = None, dim: int = 2):
        self.options, self.index = options, index
        proj = filters[index]
        self.etas = (options.eta_eroded, float(proj.options.eta), options.eta_dilated)
        self.views = [proj.at_threshold(e) for e in self.etas]
        dilated = options.volume_on == "dilated"
        self.on = [2 if dilated and b.function.name == "volume" else INTERMEDIATE
                   for b in bounds]
        self.bounds = bounds
        self.pending = True
        self.sizes = (minimum_sizes(radius, self.etas, dim) if radius is not None
                      else None)
        """The nominal minimum sizes (solid, void) of the intermediate design, from the
        density filter's radius (None: a filter without one)."""

    def describe(self, unit: str) -> str:
        """One line for the log: the thresholds and the minimum sizes."""
        e, i, d = self.etas
        line = f"robust formulation: eroded, intermediate, dilated at eta {e:g}, {i:g}, {d:g}"
        if self.sizes is not None:
            line += (f"; minimum size of solid {self.sizes[0]:.3g} {unit}, of void "
                     f"{self.sizes[1]:.3g} {unit} (intermediate design)")
        return line

    def summary(self) -> dict:
        """What summary.json says of the formulation: thresholds, minimum sizes and
        the limits in force (a dilated volume's, rescaled)."""
        out = {"eta": dict(zip(REALIZATIONS, self.etas)),
               "limits": {b.label: b.limit * b.factor for b in self.bounds}}
        if self.sizes is not None:
            out["minimum_size"] = {"solid": self.sizes[0], "void": self.sizes[1]}
        return out

    def stages(self, stages: list[Any], k: int) -> list[Any]:
        """The chain of realization ``k``: ``stages`` with the projection at its eta."""
        return stages[:self.index] + [self.views[k]] + stages[self.index + 1:]

    def rows(self, n_functions: int) -> list[tuple[int, int]]:
        """(realization, function) of every value the optimizer sees: the objective at
        each realization, then each constraint at its own."""
        return [(k, 0) for k in range(3)] + [(r, 1 + j) for j, r in enumerate(self.on)]

    def observe(self, values: list[list[float]]) -> None:
        """Rescale the dilated volume limits when due, from the functions' values at
        every realization: limit V* V(rho_d)/V(rho_i)."""
        if not self.pending:
            return
        for j, (b, r) in enumerate(zip(self.bounds, self.on)):
            if r != INTERMEDIATE:
                vi, vd = values[INTERMEDIATE][1 + j], values[r][1 + j]
                b.factor = vd / vi if vi > 0 else 1.0
        self.pending = False

    def advance(self, iteration: int) -> None:
        """Ask for a rescale of the volume limits every ``volume_every`` iterations."""
        if iteration % self.options.volume_every == 0:
            self.pending = True

    def state_dict(self) -> dict:
        """The volume limits' factors and whether a rescale is due (checkpoints)."""
        return {"factors": np.array([b.factor for b in self.bounds], dtype=float),
                "pending": bool(self.pending)}

    def load_state_dict(self, state: dict) -> None:
        for b, f in zip(self.bounds, np.atleast_1d(state.get("factors", []))):
            b.factor = float(f)
        self.pending = bool(state["pending"])


LOST = 1e-6  # a realization whose objective fell below this share of its largest: lost


def lost_realizations(history: list[Any], final: dict) -> list[str]:
    """The realizations whose final objective (``final``: the model's
    ``realization_values``) is 0 next to the largest magnitude it had during the run
    (``history``: the iteration records, with ``objective_<name>``): a design that once
    worked and no longer does, such as an eroded mechanism whose hinge was cut (its
    output no longer moves). A realization that never worked is not named."""
    lost = []
    for name in REALIZATIONS:
        largest = max((abs(float(r.extra.get(f"objective_{name}", 0.0))) for r in history),
                      default=0.0)
        if largest > 0.0 and abs(float(final[name]["objective"])) <= LOST * largest:
            lost.append(name)
    return lost


def robust_design(model: Any, issues: list[Any]) -> RobustDesign | None:
    """The model's robust formulation, or None; what it cannot take is an issue located
    at ``design.robust``: no projection with a threshold after a density filter, thresholds
    out of order, an optimizer without the min-max form."""
    options = None if model.shape else model.problem.design.robust
    if options is None:
        return None
    loaded, where = model.loaded, ("design", "robust")
    index = next((i for i, f in enumerate(model.filters)
                  if f is not None and getattr(f, "threshold", False)), None)
    if index is None:
        issues.append(loaded.issue(where, "the robust formulation projects the filtered "
                                   "design at three thresholds: add a projection filter "
                                   "(filters: - type: heaviside) after a density filter"))
        return None
    before = model.filters[:index]
    if not any(f is not None and f.linear and not f.heuristic for f in before):
        issues.append(loaded.issue(("filters", index, "type"), "the robust formulation "
                                   "needs a density filter before the projection: its "
                                   "minimum size comes from the filter's radius"))
        return None
    eta = float(model.filters[index].options.eta)
    if not options.eta_dilated < eta < options.eta_eroded:
        issues.append(loaded.issue(where, "the thresholds must satisfy eta_dilated < eta "
                                   f"(the projection's, {eta:g}) < eta_eroded, got "
                                   f"eta_dilated {options.eta_dilated:g}, eta_eroded "
                                   f"{options.eta_eroded:g}"))
        return None
    opt = model.optimizer
    if opt is not None and not getattr(opt, "worst_case", False):
        issues.append(loaded.issue(("optimizer", "type"), f"the optimizer {opt.name!r} "
                                   "cannot minimize the worst of the robust formulation's "
                                   "three designs; use type: mma"))
        return None
    if issues:  # the problem is in error elsewhere: the checks above are what counts
        return None
    density = [f for f in before if f is not None and f.linear and not f.heuristic][-1]
    radius = getattr(density.options, "radius", None)
    return RobustDesign(options, model.filters, index, model.bounds, radius, model.mesh.dim)


def minimum_sizes(radius: float, etas: tuple[float, float, float], dim: int,
                  n: int = 4001) -> tuple[float, float]:
    """The nominal minimum sizes (solid, void) of the intermediate design for a cone
    density filter of ``radius`` in ``dim`` dimensions and sharp projections at
    ``etas`` (eroded, intermediate, dilated).

    The limiting feature is a bar (a plate in 3D) whose eroded realization just
    survives: the narrowest band of solid x whose filtered peak reaches eta_e. Across
    the bar the filter acts through the cone's marginal kernel; the intermediate bar is
    where the filtered field exceeds eta. Void is the same with 1 - x, 1 - eta_d and
    1 - eta. Curved features and coarse meshes deviate from this; femopt reports it as
    the size the formulation aims at, and the tests measure designs against it."""
    s = np.linspace(-radius, radius, n)
    ds = s[1] - s[0]
    if dim == 1:
        kernel = radius - np.abs(s)
    else:  # the cone max(0, R - |r|) integrated over the other dim - 1 directions
        kernel = np.array([_marginal(radius, abs(t), dim) for t in s])
    kernel /= kernel.sum()

    def width(eta_survive: float, eta_mid: float) -> float:
        # half-width a of a band whose filtered peak is eta_survive, then the width of
        # its filtered field above eta_mid
        cum = np.cumsum(kernel)
        centre = n // 2
        peaks = np.array([cum[centre + i] - (cum[centre - i - 1] if i < centre else 0.0)
                          for i in range(centre + 1)])
        i = int(np.searchsorted(peaks, eta_survive))
        band = (np.abs(s) <= i * ds).astype(float)
        field = np.convolve(np.pad(band, n), kernel, mode="same")[n:-n]
        return float(np.count_nonzero(field >= eta_mid) * ds)

    e, i, d = etas
    return width(e, i), width(1.0 - d, 1.0 - i)


def _marginal(radius: float, t: float, dim: int) -> float:
    """Integral of the cone max(0, R - |(t, y)|) over y in dim - 1 dimensions."""
    if t >= radius:
        return 0.0
    h = math.sqrt(radius * radius - t * t)
    y = np.linspace(0.0, h, 2001)
    cone = radius - np.sqrt(t * t + y * y)
    measure = 2.0 if dim == 2 else 2.0 * math.pi * y  # |y| line or ring
    return float(np.trapezoid(cone * measure, y))
