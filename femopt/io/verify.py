"""Re-analysis of an exported part (``femopt export --verify``).

The exported solid is meshed (3D: tetrahedra from its closed surface with TetGen; 2D:
quality triangles of its outlines with Triangle; both through meshpy), the problem's
supports and loads are applied with the same region selectors, and femopt's physics
solves it with full material everywhere. The part's compliance is compared with the
optimized (grey, interpolated) design's, and its volume with the thresholded design's and
with the volume constraint's target.

Regions are evaluated against the design domain's bounding box (``face: x_max`` is the
domain's face, not the part's) with a tolerance of one design cell, because the part's
surface lies up to about half a cell from the grid nodes the regions selected. A nodal
load keeps its total: what acted on n grid nodes is shared by the part's nodes in the
region; a surface load keeps its resultant the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.sparse import FixedPatternAssembler
from femopt.assembly.surface import surface_load_vector
from femopt.errors import FemoptError, RunError
from femopt.mesh.mesh import Mesh
from femopt.mesh.regions import RegionError, select_cells, select_nodes
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model


@dataclass
class _PartMesh(Mesh):
    """A mesh of the exported part whose regions are measured in the design domain."""

    domain: tuple[np.ndarray, np.ndarray] | None = None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.domain if self.domain is not None else super().bounds()


def tetrahedralize(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quality tetrahedra (radius-edge ratio <= 2) filling a closed surface (TetGen).

    TetGen may split surface triangles; a ratio of 2 rather than TetGen's default 1.5
    keeps the count near the surface's own resolution (about 3x fewer tetrahedra on the
    3D cantilever) at no visible cost in compliance."""
    from meshpy import tet

    info = tet.MeshInfo()
    info.set_points(np.asarray(vertices, dtype=float).tolist())
    info.set_facets(np.asarray(faces, dtype=np.int64).tolist())
    built = tet.build(info, options=tet.Options("pq2.0"))
    points = np.array(built.points, dtype=float)
    cells = np.array(built.elements, dtype=np.int64)
    return points, orient_positive(points, cells)


def orient_positive(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Swap two nodes of every simplex with a negative Jacobian."""
    p = points[cells]
    det = np.linalg.det(p[:, 1:] - p[:, :1])
    cells = cells.copy()
    cells[det < 0, :2] = cells[det < 0, 1::-1]
    return cells


def part_mesh(part, domain: tuple[np.ndarray, np.ndarray]) -> _PartMesh:
    if part.dim == 3:
        pts, cells = tetrahedralize(part.surface.vertices, part.surface.faces)
        return _PartMesh(pts, cells, "tet4", domain=domain)
    cells = orient_positive(part.points2d, part.triangles)
    return _PartMesh(part.points2d, cells, "tri3", domain=domain)


def _load_cases(problem) -> list[tuple[str, float, list]]:
    if problem.load_cases is not None:
        return [(c.name or f"case{i + 1}", c.weight, c.loads)
                for i, c in enumerate(problem.load_cases)]
    return [("loads", 1.0, problem.loads)]


def _near(region, tol: float):
    return region.model_copy(update={"tol": max(tol, region.tol or 0.0)})


def _carry_groups(design: Mesh, part: Mesh, tol: float) -> None:
    """Named groups of the design mesh (from a mesh file) on the part's mesh: the part's
    nodes (cells) within ``tol`` of the group's nodes (cell centroids)."""
    from scipy.spatial import cKDTree

    for name, idx in design.node_sets.items():
        d, _ = cKDTree(design.points[idx]).query(part.points, distance_upper_bound=tol)
        part.node_sets[name] = np.flatnonzero(np.isfinite(d))
    centroids = design.centroids()
    for name, idx in design.cell_sets.items():
        d, _ = cKDTree(centroids[idx]).query(part.centroids(), distance_upper_bound=tol)
        part.cell_sets[name] = np.flatnonzero(np.isfinite(d))


def verify_part(result_dir: Path, part) -> dict[str, Any]:
    """Mesh and solve the exported ``part`` of the run in ``result_dir``; the report."""
    from femopt.io.resultdir import open_result_dir

    rd = open_result_dir(result_dir)
    registry = get_registry()
    loaded = parse_problem(rd.problem_bytes.decode("utf-8"), str(rd.problem_file), registry)
    model = Model(loaded, registry)
    problem = model.problem
    density = rd.array("density.npy", model.mesh.n_cells)
    state = model.path.analyse(density)
    optimized = float(np.sum(model.weights * np.einsum("cd,cd->c", model.loads, state.u)))

    try:
        mesh = part_mesh(part, model.mesh.bounds())
    except (RuntimeError, ValueError) as exc:
        raise RunError(f"cannot mesh the exported part for the re-analysis: {exc}") from None
    _carry_groups(model.mesh, mesh, 1.5 * part.cell_size)
    sec = loaded.sections["physics"]
    physics = registry.create("physics", sec.type, sec.options, mesh)
    k = physics.dofs_per_node
    n_dofs = mesh.n_nodes * k
    tol = part.cell_size

    fixed = []
    for i, s in enumerate(problem.supports):
        try:
            nodes = select_nodes(_near(s.region, tol), mesh)
        except RegionError:
            raise RunError(f"supports.{i}: the exported part does not reach this support "
                           f"region") from None
        comps = (range(k) if s.dofs is None
                 else [physics.dof_names.index(d) for d in s.dofs])
        fixed.append((nodes[:, None] * k + np.array(list(comps))[None, :]).ravel())
    fixed_dofs = np.unique(np.concatenate(fixed))

    cases = _load_cases(problem)
    f = np.zeros((len(cases), n_dofs))
    surface = iter(model.surface_loads)  # in the order of the surface loads in the file
    for c, (name, _, loads) in enumerate(cases):
        for j, load in enumerate(loads):
            if load.surface:  # its resultant, shared by the part's nodes in the region
                vec = surface_load_vector(next(surface), model.mesh.points,
                                          model.physics.dofs_per_node,
                                          model.physics.thickness())
                value = vec.reshape(-1, model.physics.dofs_per_node).sum(axis=0)
            else:
                value = np.atleast_1d(np.asarray(load.force if load.force is not None
                                                 else load.heat, dtype=float))
            if load.body:
                cells = (select_cells(load.region, mesh) if load.region is not None
                         else np.arange(mesh.n_cells))
                f[c] += physics.body_load(list(value), cells)
                continue
            n_grid = select_nodes(load.region, model.mesh).size
            total = value * (n_grid if load.distribute == "per_node" and not load.surface
                             else 1)
            try:
                nodes = select_nodes(_near(load.region, tol), mesh)
            except RegionError:
                raise RunError(f"load {name}.{j}: the exported part does not reach this "
                               f"load's region") from None
            for comp in range(k):
                f[c, nodes * k + comp] += total[comp] / nodes.size

    free = np.setdiff1d(np.arange(n_dofs), fixed_dofs)
    assembler = FixedPatternAssembler(physics.cell_dofs(), n_dofs, free)
    ke = physics.element_matrices()
    solver = registry.create("solver", "direct", registry.get("solver", "direct").cls.Options())
    try:
        solver.update(assembler.assemble(np.ones(mesh.n_cells), ke))
        rhs = assembler.restrict(f.T)
        u_free = solver.solve(rhs if rhs.shape[1] > 1 else rhs[:, 0])
    except FemoptError as exc:
        raise RunError(f"the re-analysis of the exported part failed (is every piece of it "
                       f"supported?): {exc}") from None
    u = assembler.expand(np.reshape(u_free, rhs.shape)).T
    exported = float(np.sum(model.weights * np.einsum("cd,cd->c", f, u)))

    # the volume constraint's own measure: the summed cell volumes (not the bounding box,
    # which is larger for a domain with holes)
    depth = part.thickness if part.dim == 2 else 1.0
    target = None
    for b in model.bounds:
        if b.function.name == "volume" and b.kind == "max":
            target = b.limit * b.function.natural_scale * depth
    report = {
        "mesh": {"cell_type": mesh.cell_type, "cells": int(mesh.n_cells),
                 "nodes": int(mesh.n_nodes)},
        "compliance_optimized": optimized,
        "compliance_exported": exported,
        "compliance_ratio": exported / optimized,
        "volume_exported": part.volume,
        "volume_thresholded": part.thresholded_volume,
        "volume_error": part.volume / part.thresholded_volume - 1.0,
        "volume_target": target,
        "volume_vs_target": None if target is None else part.volume / target,
    }
    return report
