"""Boundary conditions, loads and passive regions of a problem on its mesh: the dof sets
and vectors every backend starts from. Each function appends located issues for what the
problem file got wrong (region selects nothing, unknown dof names, wrong load kind)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.errors import Issue, SingularSystemError
from femopt.mesh.regions import RegionError, select_cells, select_nodes


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


def springs(model: Any, issues: list[Issue]) -> np.ndarray:
    """Spring stiffness per dof (full dof vector) from the ``springs`` section."""
    names = model.physics.dof_names
    k = len(names)
    out = np.zeros(model.n_dofs)
    for i, s in enumerate(model.problem.springs):
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
            out[nodes * k + c] += value
    return out


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


def loads(model: Any, issues: list[Issue]):
    """(case names, case weights, (n_cases, n_dofs) load vectors) of the problem."""
    p = model.problem
    if p.load_cases is not None:
        cases = [(("load_cases", i, "loads"), c.name or f"case{i + 1}", c.weight, c.loads)
                 for i, c in enumerate(p.load_cases)]
    else:
        cases = [(("loads",), "loads", 1.0, p.loads)]
    k = model.physics.dofs_per_node
    vecs = np.zeros((len(cases), model.n_dofs))
    for c, (path, _, _, loads) in enumerate(cases):
        for j, load in enumerate(loads):
            lp = path + (j,)
            key = model.physics.load_name
            value = load.force if load.force is not None else load.heat
            given = "force" if load.force is not None else "heat"
            if given != key:
                issues.append(model.loaded.issue(lp + (given,),
                              f"{model.physics.name} takes '{key}' loads, not '{given}'"))
                continue
            vec = np.atleast_1d(np.asarray(value, dtype=float))
            if vec.size != k:
                issues.append(model.loaded.issue(lp + (given,),
                              f"expected {k} component(s) ({', '.join(model.physics.dof_names)}),"
                              f" got {vec.size}"))
                continue
            try:
                if load.body:
                    cells = (select_cells(load.region, model.mesh) if load.region
                             else np.arange(model.mesh.n_cells))
                    vecs[c] += model.physics.body_load(list(vec), cells)
                else:
                    nodes = select_nodes(load.region, model.mesh)
                    if load.distribute == "total":
                        vec = vec / nodes.size
                    for comp in range(k):
                        vecs[c, nodes * k + comp] += vec[comp]
            except RegionError as exc:
                issues.append(model.loaded.issue(lp + ("region",), str(exc)))
    return [n for _, n, _, _ in cases], np.array([w for _, _, w, _ in cases]), vecs


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
        for i, f in enumerate(model.filters):
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
