"""Boundary conditions, loads and passive regions of a problem on its mesh: the dof sets
and vectors every backend starts from. Each function appends located issues for what the
problem file got wrong (region selects nothing, unknown dof names, wrong load kind, a
surface load on a region without boundary facets)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.sparse_vector import SparseVector
from femopt.assembly.surface import SurfaceLoad, surface_load_vector
from femopt.errors import Issue, SingularSystemError
from femopt.evaluation.load_nonzeros import LoadNonzeros
from femopt.mesh.facets import select_facets
from femopt.mesh.regions import RegionError, select_cells, select_nodes
from femopt.problem.schema import SURFACE_KEYS


def supports(model: Any, issues: list[Issue]) -> np.ndarray:
    """The supported dofs; supports that leave a rigid-body mode free are refused."""
    names = model.physics.dof_names
    k = len(names)
    fixed: list[np.ndarray] = []
    for i, s in enumerate(model.problem.supports):
        try:
            nodes = select_nodes(s.region, model.mesh)
        except RegionError as exc:
            issues.append(model.loaded.issue(("supports", i, "region"), str(exc)))
            continue
        comps = range(k)
        if s.dofs is not None:
            bad = [d for d in s.dofs if d not in names]
            if bad:
                issues.append(model.loaded.issue(
                    ("supports", i, "dofs"),
                    f"unknown dof {bad[0]!r} for {model.physics.name} "
                    f"(its dofs: {', '.join(names)})"))
                continue
            comps = [names.index(d) for d in s.dofs]
        fixed.append((nodes[:, None] * k + np.array(list(comps))[None, :]).ravel())
    if issues:
        return np.zeros(0, dtype=np.int64)
    fixed_dofs = np.unique(np.concatenate(fixed)) if fixed else np.zeros(0, np.int64)
    check_rigid_modes(model, fixed_dofs)
    return fixed_dofs


def springs(model: Any, issues: list[Issue]) -> SparseVector:
    """Spring stiffness per dof (femopt's numbering) from the ``springs`` section, by its
    nonzeros: each dof's stiffness is the sum, in the file's order, of the springs on
    it (no vector of the problem's size)."""
    names = model.physics.dof_names
    k = len(names)
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    for i, s in enumerate(model.problem.springs or []):
        try:
            nodes = select_nodes(s.region, model.mesh)
        except RegionError as exc:
            issues.append(model.loaded.issue(("springs", i, "region"), str(exc)))
            continue
        bad = [d for d in (s.dofs or []) if d not in names]
        if bad:
            issues.append(model.loaded.issue(
                ("springs", i, "dofs"), f"unknown dof {bad[0]!r} for {model.physics.name} "
                f"(its dofs: {', '.join(names)})"))
            continue
        comps = [names.index(d) for d in s.dofs] if s.dofs else list(range(k))
        value = s.stiffness / nodes.size if s.distribute == "total" else s.stiffness
        for c in comps:
            pieces.append((nodes * k + c, np.full(nodes.size, float(value))))
    return SparseVector.from_pieces(model.n_dofs, pieces)


def check_rigid_modes(model: Any, fixed: np.ndarray) -> None:
    """Supports must remove every rigid-body mode, else K is singular."""
    sub = model.physics.rigid_modes(fixed)
    sub = sub / np.maximum(np.linalg.norm(sub, axis=0), 1e-300)
    if sub.shape[0] == 0:
        free_modes = np.eye(sub.shape[1])
    else:  # vt square: thin when there are more fixed dofs than modes
        _, s, vt = np.linalg.svd(sub, full_matrices=sub.shape[0] < sub.shape[1])
        s = np.concatenate([s, np.zeros(vt.shape[0] - s.size)])
        free_modes = vt[s < 1e-8 * max(1.0, s.max(initial=0.0))]
    if free_modes.shape[0]:
        names = model.physics.rigid_mode_names()
        which = sorted({names[int(np.argmax(np.abs(v)))] for v in free_modes})
        line, col = model.loaded.located.position(("supports",))
        raise SingularSystemError(
            f"{model.loaded.filename}:{line}:{col}: supports: the supports leave the "
            f"structure free to move ({free_modes.shape[0]} rigid-body mode(s) "
            f"unconstrained: {', '.join(which)}); the system would be singular")


# surface-load keys each nodal-load key goes with (a physics' ``load_name``)
SURFACE_FOR = {"force": ("traction", "pressure"), "heat": ("heat_flux",)}


def loads(model: Any, issues: list[Issue]):
    """(case names, case weights, the load vectors as :class:`LoadNonzeros`, surface
    loads) of the problem; the vectors include the surface loads at the mesh's
    coordinates. No vector of the problem's size is kept: a surface or body load's
    vector lives only until its nonzeros are taken."""
    p = model.problem
    if p.load_cases is not None:
        cases = [(("load_cases", i, "loads"), c.name or f"case{i + 1}", c.weight, c.loads)
                 for i, c in enumerate(p.load_cases)]
    else:
        cases = [(("loads",), "loads", 1.0, p.loads or [])]
    pieces: list[tuple[int, np.ndarray, np.ndarray]] = []
    surface: list[SurfaceLoad] = []
    for c, (path, _, _, case_loads) in enumerate(cases):
        for j, load in enumerate(case_loads):
            lp = path + (j,)
            try:
                if load.surface:
                    s = _surface_load(model, c, load, lp, issues)
                    if s is not None:
                        surface.append(s)
                        pieces.append((c, *_nonzeros(surface_load_vector(
                            s, model.mesh.coords, model.physics.dofs_per_node,
                            model.physics.thickness()))))
                else:
                    vec = _value(model, load, lp, issues)
                    if vec is not None:
                        pieces.extend((c, d, v) for d, v in _nodal_or_body(model, load, vec))
            except RegionError as exc:
                issues.append(model.loaded.issue(lp + ("region",), str(exc)))
    nz = LoadNonzeros.from_pieces(len(cases), model.n_dofs, pieces)
    return [n for _, n, _, _ in cases], np.array([w for _, _, w, _ in cases]), nz, surface


def _nonzeros(vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.flatnonzero(vec)
    return idx, vec[idx]


def _value(model: Any, load: Any, lp: tuple, issues: list[Issue]) -> np.ndarray | None:
    """The force or heat of a load as a vector of one entry per dof; None (and an issue)
    when the physics takes the other kind or the size is wrong."""
    k = model.physics.dofs_per_node
    key = model.physics.load_name
    given = "force" if load.force is not None else "heat"
    if given != key:
        issues.append(model.loaded.issue(lp + (given,),
                      f"{model.physics.name} takes '{key}' loads, not '{given}'"))
        return None
    vec = np.atleast_1d(np.asarray(getattr(load, given), dtype=float))
    if vec.size != k:
        issues.append(model.loaded.issue(lp + (given,),
                      f"expected {k} component(s) ({', '.join(model.physics.dof_names)}),"
                      f" got {vec.size}"))
        return None
    return vec


def _nodal_or_body(model: Any, load: Any, vec: np.ndarray):
    """(dofs, values) pieces of a nodal load (one per component, at its nodes' dofs
    only) or a body load (the nonzeros of its vector)."""
    if load.body:
        cells = (select_cells(load.region, model.mesh) if load.region
                 else np.arange(model.mesh.n_cells))
        return [_nonzeros(model.physics.body_load(list(vec), cells))]
    k = model.physics.dofs_per_node
    nodes = select_nodes(load.region, model.mesh)  # distinct
    if load.distribute == "total":
        vec = vec / nodes.size
    comps = [c for c in range(k) if vec[c] != 0]  # a zero component adds nothing
    return [(nodes * k + comp, np.full(nodes.size, vec[comp])) for comp in comps]


def _surface_load(model: Any, case: int, load: Any, lp: tuple,
                  issues: list[Issue]) -> SurfaceLoad | None:
    """The surface load of a traction, pressure, heat flux or a total spread by area, on
    the region's boundary facets; None (and an issue) when the physics takes another
    kind of load or the value has the wrong size."""
    physics = model.physics
    given = next((key for key in SURFACE_KEYS if getattr(load, key) is not None), None)
    if given is None:  # distribute: area
        total = _value(model, load, lp, issues)
        if total is None:
            return None
        facets = select_facets(load.region, model.mesh)
        unit = SurfaceLoad(case, "traction", np.ones(1), facets)
        area = surface_load_vector(unit, model.mesh.coords, 1, physics.thickness()).sum()
        return SurfaceLoad(case, "traction", total / area, facets)
    takes = SURFACE_FOR.get(physics.load_name, ())
    if given not in takes:
        kinds = " or ".join(f"'{t}'" for t in takes) or "no"
        why = ("a heat flux needs a scalar physics such as heat_conduction"
               if given == "heat_flux" else
               "a traction or pressure acts on displacements (e.g. linear_elasticity)")
        issues.append(model.loaded.issue(lp + (given,), f"{physics.name} takes {kinds} "
                                         f"surface loads, not '{given}' ({why})"))
        return None
    value = np.atleast_1d(np.asarray(getattr(load, given), dtype=float))
    k = physics.dofs_per_node
    if given == "traction" and value.size != k:
        issues.append(model.loaded.issue(lp + (given,), f"expected {k} component(s) "
                                         f"({', '.join(physics.dof_names)}), got {value.size}"))
        return None
    if given == "pressure" and k != model.mesh.dim:
        issues.append(model.loaded.issue(lp + (given,), f"a pressure needs one displacement "
                                         f"dof per axis; {physics.name} has {k}"))
        return None
    facets = select_facets(load.region, model.mesh)
    return SurfaceLoad(case, "pressure" if given == "pressure" else "traction", value,
                       facets)


def passive(model: Any, issues: list[Issue]):
    """(cell indices, fixed densities) of the passive regions (a later entry wins)."""
    idx, val = [], []
    if model.shape:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    for i, ps in enumerate(model.problem.design.passive):
        try:
            cells = select_cells(ps.region, model.mesh)
        except RegionError as exc:
            issues.append(model.loaded.issue(("design", "passive", i, "region"), str(exc)))
            continue
        idx.append(cells)
        val.append(np.full(cells.size, 1.0 if ps.value == "solid" else 0.0))
    if not idx:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    # a later entry wins where regions overlap
    all_idx, all_val = np.concatenate(idx), np.concatenate(val)
    last = {int(c): v for c, v in zip(all_idx, all_val)}
    keys = np.array(sorted(last), dtype=np.int64)
    return keys, np.array([last[int(c)] for c in keys])


def check_design_map(model: Any, issues: list[Issue]) -> None:
    """A design map (symmetry, extrusion) is the first filter, and no heuristic filter
    works on its reduced design."""
    maps = [i for i, f in enumerate(model.filters) if getattr(f, "design_map", False)]
    for i in maps:
        if i != 0:
            issues.append(model.loaded.issue(("filters", i, "type"), "a design map must be "
                                             "the first filter: it defines the design "
                                             "variables"))
    if maps:
        design_map = model.filters[maps[0]]
        mapped = {p.axis for p in design_map.options.symmetry} | {design_map.options.extrude}
        for i, f in enumerate(model.filters):
            build = getattr(getattr(f, "options", None), "build_direction", None)
            if build is not None and build[1] in mapped:
                issues.append(model.loaded.issue(
                    ("filters", i, "build_direction"), f"the design map mirrors or extrudes "
                    f"along {build[1]}, the build direction: a part printed layer by layer "
                    "cannot be symmetric about a plane normal to its build direction nor "
                    "constant along it"))
            if f is not None and f.heuristic:
                issues.append(model.loaded.issue(("filters", i, "type"), f"the {f.name} "
                                                 "filter rewrites the gradient of each "
                                                 "cell's variable; with a design map the "
                                                 "variables are the reduced ones: use a "
                                                 "density filter"))


def fixed_design(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(design variable indices, values) fixed by passive regions: the passive cells
    themselves, or with a design map the reduced variables whose representative cell is
    passive (every cell is still set to its passive value after the chain)."""
    design_map = model.filters[0] if model.filters else None
    if not getattr(design_map, "design_map", False):
        return model.passive_idx, model.passive_val
    rep = design_map.representative[model.passive_idx]
    own = rep == model.passive_idx
    return (design_map.cell_to_reduced[model.passive_idx[own]],
            np.asarray(model.passive_val)[own])


def design_start(model: Any, n: int, device: bool, distributed: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xmin, xmax, x0) of ``n`` design variables. A device path, or a rank its slab,
    makes them where it keeps the design (make_path; a rank puts the fixed values of
    ``x_fixed_idx`` in): constant views then, no host arrays of the design's size."""
    start = model._initial_density()
    if (device and model.x_fixed_idx.size == 0) or (distributed and n == model.mesh.n_cells):
        return tuple(np.broadcast_to(np.float64(v), (n,)) for v in (0.0, 1.0, start))
    xmin, xmax, x0 = np.zeros(n), np.ones(n), np.full(n, start)
    for a in (xmin, xmax, x0):
        a[model.x_fixed_idx] = model.x_fixed_val
    return xmin, xmax, x0
