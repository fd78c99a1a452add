"""The shape optimizer of a problem file's ``design: {type: shape, ...}`` section: the
moving nodes, the held and sliding ones, the extension and the constraints, each error
located in the file."""

from __future__ import annotations

import numpy as np

from femopt.errors import Issue, ProblemError
from femopt.mesh.regions import RegionError, select_nodes
from femopt.shape.extension import (Extension, boundary_facets, held_components)
from femopt.shape.optimizer import ShapeConstraint, ShapeOptimizer
from femopt.shape.quality import scaled_jacobian


def check_shape_problem(model, issues: list[Issue]) -> None:
    """What a shape design cannot take: a structured grid, filters, an optimizer
    section, exporters of density fields."""
    data = model.loaded.located.data
    if model.mesh.grid is not None:
        issues.append(model.loaded.issue(("design", "type"), "a shape design moves the "
                                         "nodes of a mesh read from a file (mesh: {type: "
                                         "file, path: ...}); this mesh is a structured grid"))
    if data.get("filters"):
        issues.append(model.loaded.issue(("filters",), "filters act on densities; a shape "
                                         "design has none"))
    if "optimizer" in data:
        issues.append(model.loaded.issue(("optimizer",), "a shape design is optimized by "
                                         "femopt's shape optimizer; its settings (max_step, "
                                         "max_iter, tol, ...) go under design"))
    for i, fmt in enumerate(model.problem.output.formats):
        if fmt != "vtu":
            issues.append(model.loaded.issue(("output", "formats", i), f"{fmt!r} exports a "
                                             "density field; a shape design writes vtu "
                                             "(the moved mesh)"))


def shape_optimizer(model) -> ShapeOptimizer:
    """The :class:`ShapeOptimizer` of ``model``'s shape design.

    Raises:
        ProblemError located at ``design``: the boundary selects no node or nodes inside
        the mesh (the groups are listed), a slide region selects none, or nothing holds
        the mesh in place.
    """
    design = model.problem.design
    mesh = model.mesh
    loaded = model.loaded
    issues: list[Issue] = []
    facets = boundary_facets(mesh.cells, mesh.cell_type)
    on_boundary = np.zeros(mesh.n_nodes, dtype=bool)
    on_boundary[facets] = True
    moving = np.zeros(0, dtype=np.int64)
    try:
        moving = select_nodes(design.boundary, mesh)
    except RegionError as exc:
        issues.append(loaded.issue(("design", "boundary"), str(exc)))
    inner = moving[~on_boundary[moving]]
    if inner.size:
        issues.append(loaded.issue(("design", "boundary"), f"{inner.size} of the region's "
                                   f"{moving.size} nodes lie inside the mesh, not on its "
                                   "boundary (first: " + ", ".join(map(str, inner[:5])) + ")"))
    slides = []
    for i, sl in enumerate(design.slide):
        axis = "xyz".index(sl.normal)
        if axis >= mesh.dim:
            issues.append(loaded.issue(("design", "slide", i, "normal"),
                                       f"a {mesh.dim}D mesh has no axis {sl.normal!r}"))
            continue
        try:
            slides.append((select_nodes(sl.region, mesh), axis))
        except RegionError as exc:
            issues.append(loaded.issue(("design", "slide", i, "region"), str(exc)))
    if issues:
        raise ProblemError(loaded.filename, issues)
    held = held_components(mesh.points, mesh.cells, mesh.cell_type, moving, slides)
    ext = design.extension
    if not held.any() and ext.length is None:
        raise loaded.error(("design", "extension"), "no boundary node is held (the whole "
                           "boundary moves or slides): give extension.length, whose mass "
                           "term keeps the extension solvable")
    if held[moving].all():
        raise loaded.error(("design", "boundary"), "every node of the moving boundary is "
                           "held: it lies on fixed boundary facets (add slide regions for "
                           "symmetry planes it meets)")
    extension = Extension(mesh.cells, mesh.cell_type, moving, held, ext.type, ext.data,
                          ext.length, ext.nu, ext.stiffening, ext.normal)
    max_step = design.max_step
    if max_step is None:  # the mean edge length of the moving boundary
        on_moving = np.zeros(mesh.n_nodes, dtype=bool)
        on_moving[moving] = True
        f = facets[on_moving[facets].all(axis=1)]
        p = mesh.points[f]
        edges = np.linalg.norm(p - np.roll(p, 1, axis=1), axis=2)
        max_step = float(edges.mean()) if edges.size else mesh.min_cell_size()
    q0 = scaled_jacobian(mesh.points, mesh.cells, mesh.cell_type)
    model.initial_quality = float(q0.min())
    constraints = [ShapeConstraint(b.label, b.kind, b.limit) for b in model.bounds]
    opt = ShapeOptimizer(mesh.cells, mesh.cell_type, extension, constraints, max_step,
                         design.min_quality, design.tol, design.constraint_tol,
                         design.backtracks)
    opt.options = design  # max_iter, as the runner reads it from every optimizer
    opt.moving = moving
    return opt
