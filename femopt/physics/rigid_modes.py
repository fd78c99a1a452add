"""Rigid modes: the displacements or fields an unconstrained operator does not resist.

The candidates are the rigid-body motions of a vector field with one component per axis
(translations and infinitesimal rotations) and the uniform shifts of every other field's
components. A physics keeps the candidates its element matrix annihilates
(:func:`null_candidates`), so a scalar physics with a definite operator (a reaction term)
has none and a Laplacian has the uniform shift, without either saying so.
"""

from __future__ import annotations

import numpy as np

NULL_TOL = 1e-8  # |K_e v| <= NULL_TOL |K_e| |v|: v is in the element's null space


def rigid_body_modes(points: np.ndarray, dofs: np.ndarray | None = None,
                     center: np.ndarray | None = None) -> np.ndarray:
    """(len(dofs), 3 or 6) rigid-body displacements at node-major ``dofs`` (all when None)
    of the nodes at ``points``: the translations along x, y (, z), then the infinitesimal
    rotations about z (2D) or about x, y and z (3D), taken about ``center`` (default: the
    nodes' centroid)."""
    n, dim = points.shape
    node, comp = np.divmod(np.arange(n * dim) if dofs is None else np.asarray(dofs), dim)
    x = points[node] - (points.mean(axis=0) if center is None else center)
    modes = [(comp == d).astype(float) for d in range(dim)]
    for i, j in [(0, 1)] if dim == 2 else [(1, 2), (2, 0), (0, 1)]:
        modes.append(np.where(comp == i, -x[:, j], np.where(comp == j, x[:, i], 0.0)))
    return np.stack(modes, axis=1)


def uniform_shifts(n_nodes: int, k: int, dofs: np.ndarray | None = None) -> np.ndarray:
    """(len(dofs), k) uniform shifts of each of the k components per node."""
    comp = np.arange(n_nodes * k) % k if dofs is None else np.asarray(dofs) % k
    return (comp[:, None] == np.arange(k)[None, :]).astype(float)


def candidate_modes(points: np.ndarray, k: int, dofs: np.ndarray | None = None,
                    center: np.ndarray | None = None) -> np.ndarray:
    """Rigid-body motions when there is one component per axis, else uniform shifts."""
    if k == points.shape[1]:
        return rigid_body_modes(points, dofs, center)
    return uniform_shifts(points.shape[0], k, dofs)


def candidate_names(dim: int, dof_names: tuple[str, ...], field_name: str) -> list[str]:
    """Names of :func:`candidate_modes`, in the same order."""
    k = len(dof_names)
    if k == dim:
        axes = "xyz"[:dim]
        rot = ["z"] if dim == 2 else ["x", "y", "z"]
        return [f"translation in {a}" for a in axes] + [f"rotation about {a}" for a in rot]
    if k == 1:
        return [f"a uniform {field_name} shift (no fixed {field_name} anywhere)"]
    return [f"a uniform shift of {n}" for n in dof_names]


def null_candidates(ke: np.ndarray, cell_points: np.ndarray, k: int) -> np.ndarray:
    """Which candidates (bool per mode) the element matrix ``ke`` (nd, nd) of a cell with
    nodes ``cell_points`` (n_nodes, dim) annihilates."""
    modes = candidate_modes(cell_points, k)
    scale = max(np.abs(ke).max(), 1e-300)
    r = np.linalg.norm(ke @ modes, axis=0)
    return r <= NULL_TOL * scale * np.maximum(np.linalg.norm(modes, axis=0), 1e-300)
