"""Taylor tests of shape gradients: every function of a model along a smooth random
motion of its nodes (``femopt check-gradients`` on a problem whose design is the shape)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from femopt.adjoint.taylor import GradientCheck, taylor_test
from femopt.errors import InvertedCellsError
from femopt.mesh.mesh import CELL_EDGES


@dataclass
class ShapeGradientCheck(GradientCheck):
    """The Taylor test of one function's shape gradient; ``partial`` is the test of the
    explicit term partial J/partial X alone (states held fixed), run when it failed."""

    @property
    def wrong_term(self) -> str | None:
        """None when right; else 'partial_x' or 'adjoint term' (lambda^T (dK/dX u - df/dX))."""
        if self.ok:
            return None
        if self.partial is not None and not self.partial.ok():
            return "partial_x"
        return "adjoint term"


def smooth_direction(points: np.ndarray, seed: int = 0, modes: int = 3,
                     still: np.ndarray | None = None) -> np.ndarray:
    """A smooth random node motion (n_nodes, dim), largest entry 1: a few sine waves of
    one or two periods across the mesh's bounding box, each along a random vector.
    Nodes in ``still`` (indices or a mask) do not move."""
    rng = np.random.default_rng(seed)
    lo, hi = points.min(axis=0), points.max(axis=0)
    xi = (points - lo) / np.where(hi > lo, hi - lo, 1.0)
    n, dim = points.shape
    d = np.zeros((n, dim))
    for _ in range(modes):
        k = rng.integers(1, 3, size=dim)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        d += np.sin(np.pi * xi @ k + phase)[:, None] * rng.standard_normal(dim)[None, :]
    if still is not None:
        d[still] = 0.0
    return d / np.abs(d).max()


def check_shape_gradients(model, points: np.ndarray | None = None,
                          direction: np.ndarray | None = None, seed: int = 0,
                          step: float = 0.005, n: int = 4) -> list[ShapeGradientCheck]:
    """Taylor tests of the shape gradients of the model's objective and constraints.

    Args:
        model: a :class:`~femopt.evaluation.model.Model` or a
            :class:`~femopt.shape.gradient.ShapeEvaluator` of one.
        points: where (default: the mesh's nodes). direction: the node motion (default:
            :func:`smooth_direction` with ``seed``).
        step: the largest step moves a node by at most this fraction of the smallest
            edge (halved until no cell inverts); then ``n`` steps, each half the last.
    Returns:
        one check per function, objective first; a failing one carries the test of its
        explicit term alone, which names the wrong term.
    """
    from femopt.shape.gradient import ShapeEvaluator

    ev = model if isinstance(model, ShapeEvaluator) else ShapeEvaluator(model)
    model = ev.model
    x = ev.points0 if points is None else np.asarray(points, dtype=float)
    d = smooth_direction(x, seed) if direction is None else np.asarray(direction, dtype=float)
    d = d / np.abs(d).max()
    edges = np.array(CELL_EDGES[model.mesh.cell_type])
    p = x[ev.cells]
    h0 = step * float(np.linalg.norm(p[:, edges[:, 0]] - p[:, edges[:, 1]], axis=2).min())
    for _ in range(20):
        try:
            ev.geometry(x + h0 * d)
            break
        except InvertedCellsError:
            h0 /= 2.0
    names = [f"objective {model.objective.name}"] + [f"constraint {b.label}"
                                                     for b in model.bounds]
    _, terms = ev.evaluate(x, split=True)
    state = ev.last_state
    memo: dict[bytes, list[float]] = {}

    def values(y: np.ndarray) -> list[float]:
        key = y.tobytes()
        if key not in memo:
            memo[key] = ev.values(y.reshape(x.shape))
        return memo[key]

    checks = []
    for k, name in enumerate(names):
        ex, adj = terms[k]
        res = taylor_test(lambda y, k=k: values(y)[k], (ex + adj).ravel(), x.ravel(),
                          d.ravel(), h0=h0, n=n)
        check = ShapeGradientCheck(name, res)
        if not res.ok():
            check.partial = taylor_test(
                lambda y, k=k: ev.values_at_fixed_state(y.reshape(x.shape), state)[k],
                ex.ravel(), x.ravel(), d.ravel(), h0=h0, n=n)
        checks.append(check)
    return checks
