"""Boundary facets (edges of 2D cells, faces of 3D cells) and the facets a region selects
for a surface load.

A boundary facet belongs to one cell. Facets are returned with their nodes ordered so
that the facet's normal (2D: the edge tangent turned clockwise; 3D: the cross product of
the first two edges) points out of the cell.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from femopt.mesh.mesh import Mesh
from femopt.mesh.regions import Region, RegionError, node_mask

# facets of each cell type (local node indices, VTK order), outward for cells of positive
# orientation
FACETS = {
    "tri3": [(0, 1), (1, 2), (2, 0)],
    "quad4": [(0, 1), (1, 2), (2, 3), (3, 0)],
    "tet4": [(0, 2, 1), (0, 1, 3), (1, 2, 3), (0, 3, 2)],
    "hex8": [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6),
             (3, 0, 4, 7)],
}

# the node order that reverses a facet's normal, by its number of nodes
_REVERSED = {2: [1, 0], 3: [0, 2, 1], 4: [0, 3, 2, 1]}


def boundary_facets(cells: np.ndarray, cell_type: str) -> np.ndarray:
    """(n_facets, nodes_per_facet) node indices of the facets that belong to one cell."""
    local = np.array(FACETS[cell_type])
    facets = cells[:, local].reshape(-1, local.shape[1])
    key = np.sort(facets, axis=1)
    _, first, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    return facets[np.sort(first[counts == 1])]


def _facet_normals(p: np.ndarray) -> np.ndarray:
    """A normal of each facet from the coordinates (f, nodes, dim) of its nodes (2D: the
    edge turned clockwise)."""
    if p.shape[2] == 2:
        t = p[:, 1] - p[:, 0]
        return np.column_stack([t[:, 1], -t[:, 0]])
    return np.cross(p[:, 1] - p[:, 0], p[:, -1] - p[:, 0])


def _outward(mesh: Mesh, facets: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """``facets`` with their node order reversed where the normal points into the owner
    cell (a cell of negative orientation)."""
    p = mesh.node_coords(facets)
    centre = p.mean(axis=1)
    inside = mesh.cell_coords(owners).mean(axis=1)
    into = np.einsum("fd,fd->f", _facet_normals(p), centre - inside) < 0
    out = facets.copy()
    out[into] = facets[into][:, _REVERSED[facets.shape[1]]]
    return out


def _grid_cells_touching(mesh: Mesh, nodes: np.ndarray) -> np.ndarray:
    """The cells of a structured grid that have one of ``nodes``, from the indices alone
    (no pass over the cells of a grid of 10^8 of them)."""
    shape = np.array(mesh.grid.shape)
    ijk = np.stack(np.unravel_index(nodes, tuple(shape[::-1] + 1))[::-1], axis=1)
    out = []
    for offset in product((0, 1), repeat=mesh.dim):
        c = ijk - np.array(offset)
        c = c[np.all((c >= 0) & (c < shape), axis=1)]
        out.append(np.ravel_multi_index(tuple(c.T[::-1]), tuple(shape[::-1])))
    return np.unique(np.concatenate(out))


def _cell_facets(mesh: Mesh, nodes_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The facets of cells whose nodes all lie in ``nodes_in`` (n_nodes,) and their cells."""
    local = np.array(FACETS[mesh.cell_type])
    k = local.shape[1]
    if mesh.grid is not None:
        touching = _grid_cells_touching(mesh, np.flatnonzero(nodes_in))
        cand = touching[nodes_in[mesh.cell_nodes(touching)].sum(axis=1) >= k]
    else:
        cand = np.flatnonzero(nodes_in[mesh.cells].sum(axis=1) >= k)
    facets = mesh.cell_nodes(cand)[:, local]  # (c, facets per cell, k)
    ci, fi = np.nonzero(nodes_in[facets].all(axis=2))
    return facets[ci, fi], cand[ci]


def select_facets(region: Region, mesh: Mesh) -> np.ndarray:
    """The boundary facets a region selects, (n, nodes_per_facet), oriented outward.

    A group that holds facets (a Gmsh physical group of lines in 2D, of triangles or
    quadrangles in 3D) gives those facets, which must lie on the boundary; any other
    region gives the boundary facets whose nodes all lie in it.

    Raises:
        RegionError: no boundary facet is selected, or a facet group holds facets inside
            the mesh (shared by two cells) or facets of no cell.
    """
    facet_group = region.group is not None and region.group in mesh.facet_sets
    if facet_group:
        given = mesh.facet_sets[region.group]
        k = len(FACETS[mesh.cell_type][0])
        if given.shape[1] != k:
            raise RegionError(f"group {region.group!r} holds facets of {given.shape[1]} "
                              f"nodes; the faces of {mesh.cell_type} elements have {k}")
        nodes_in = np.zeros(mesh.n_nodes, dtype=bool)
        nodes_in[given.ravel()] = True
    else:
        nodes_in = node_mask(region, mesh)
    if not nodes_in.any():
        raise RegionError("the region selects no node, so no boundary facet")
    facets, owners = _cell_facets(mesh, nodes_in)
    key = np.sort(facets, axis=1)
    uniq, first, counts = (np.unique(key, axis=0, return_index=True, return_counts=True)
                           if len(key) else (key, np.zeros(0, np.int64), np.zeros(0, np.int64)))
    if facet_group:
        pick = _match(uniq, np.sort(given, axis=1))
        unknown = int(np.sum(pick < 0))
        inner = int(np.sum(counts[pick[pick >= 0]] > 1))
        if unknown:
            raise RegionError(f"{unknown} facet(s) of group {region.group!r} are not "
                              f"facets of any {mesh.cell_type} element")
        if inner:
            raise RegionError(f"{inner} of the {len(given)} facet(s) of group "
                              f"{region.group!r} lie inside the mesh (each is shared by "
                              "two elements): a surface load acts on boundary facets only")
        chosen = first[pick]
        rest = region.model_copy(update={"group": None})
        if rest.face or rest.box or rest.point:
            ok = node_mask(rest, mesh)
            chosen = chosen[ok[facets[chosen]].all(axis=1)]
    else:
        chosen = first[counts == 1]
    if chosen.size == 0:
        raise RegionError(f"the region selects {int(nodes_in.sum())} node(s) but no "
                          "boundary facet (a surface load needs whole boundary "
                          f"{'edges' if mesh.dim == 2 else 'faces'} in its region)")
    chosen = np.unique(chosen)  # a facet listed twice in a group still loads once
    return _outward(mesh, facets[chosen], owners[chosen])


def _match(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Index in ``table`` (unique sorted rows) of each of ``rows``; -1 where absent."""
    both = np.vstack([table, rows])
    _, inv = np.unique(both, axis=0, return_inverse=True)
    inv = inv.ravel()
    where = np.full(both.shape[0], -1, dtype=np.int64)
    where[inv[:len(table)]] = np.arange(len(table))
    return where[inv[len(table):]]
