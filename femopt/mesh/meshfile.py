"""Meshes from files through meshio: Gmsh .msh (v2, v4), VTU, XDMF, Abaqus .inp, ...

One cell type of the highest dimension becomes the elements (tri3, quad4, tet4 or hex8);
lower-dimensional cells (lines, facets) only carry named groups. Named groups come from
meshio's ``cell_sets`` (Gmsh physical groups, Abaqus elsets), from ``gmsh:physical`` with
``field_data`` when a reader gives no sets, and from ``point_sets`` (Abaqus nsets). Every
group becomes a node set (the nodes of its cells or facets); a group with elements also
becomes a cell set, and a group of facets (lines of a 2D mesh, triangles or quadrangles of
a 3D one) a facet set for surface loads.

The mesh is checked before anything is built on it; each failure is a
:class:`~femopt.errors.MeshError` that names the file: unreadable files (meshio's
message), unsupported or mixed cell types, inverted or degenerate elements (their
indices), coincident nodes, unconnected parts (a singular system), non-finite
coordinates, and cells or groups that refer to nodes or cells the file does not have.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from femopt.errors import MeshError
from femopt.mesh.mesh import Mesh

# meshio cell type -> femopt element (VTK node order in both)
ELEMENTS = {"triangle": "tri3", "quad": "quad4", "tetra": "tet4", "hexahedron": "hex8"}

# lower-dimensional cells that can be facets of the elements (surface-load groups)
FACET_TYPES = ("line", "triangle", "quad")

# length units in metres
UNITS = {"um": 1e-6, "mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254, "ft": 0.3048}


def _topological_dim(cell_type: str) -> int:
    for prefix, dim in (("vertex", 0), ("line", 1), ("triangle", 2), ("quad", 2),
                        ("polygon", 2), ("tetra", 3), ("hexahedron", 3), ("wedge", 3),
                        ("pyramid", 3), ("polyhedron", 3)):
        if cell_type.startswith(prefix):
            return dim
    return 3  # an unknown type is refused below when it is among the elements


def _show(items: list[int], n: int = 10) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


def read_mesh_file(path: str | Path, scale: float = 1.0) -> Mesh:
    """Read, check and convert the mesh file at ``path``; coordinates are multiplied by
    ``scale`` (unit conversion).

    Raises:
        MeshError naming the file and what is wrong with it.
    """
    import meshio

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: no such mesh file")
    said = io.StringIO()
    try:
        # some meshio readers print their complaint and call sys.exit: keep both in here
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            raw = meshio.read(path)
    except (Exception, SystemExit) as exc:  # ReadError, ValueError, KeyError, exit, ...
        detail = " ".join(said.getvalue().split()) if isinstance(exc, SystemExit) else \
            f"{type(exc).__name__}: {exc}"
        raise MeshError(f"{path}: cannot read the mesh file: "
                        f"{detail or 'meshio gave up on it'}") from None
    return mesh_from_meshio(raw, str(path), scale)


def mesh_from_meshio(raw, where: str, scale: float = 1.0) -> Mesh:
    """A checked :class:`Mesh` from a ``meshio.Mesh``; ``where`` names it in errors."""
    blocks = [(b.type, np.asarray(b.data)) for b in raw.cells]
    if not blocks or all(d.size == 0 for _, d in blocks):
        raise MeshError(f"{where}: the file has no cells")
    found = sorted({t for t, _ in blocks})
    dims = [_topological_dim(t) for t, _ in blocks]
    top = max(dims)
    types = sorted({t for (t, d), k in zip(blocks, dims) if k == top and d.size})
    unsupported = [t for t in types if t not in ELEMENTS]
    if unsupported:
        raise MeshError(f"{where}: unsupported cell type(s) {', '.join(unsupported)} "
                        f"(the file has: {', '.join(found)}; supported elements: "
                        f"{', '.join(f'{k} ({v})' for k, v in ELEMENTS.items())})")
    if len(types) > 1:
        raise MeshError(f"{where}: mixed element types {', '.join(types)}: femopt needs "
                        "one element type per mesh")
    cell_type = types[0]
    _check_entries(raw, blocks, where)
    element_blocks = [i for i, (t, _) in enumerate(blocks) if t == cell_type]
    cells = np.concatenate([blocks[i][1] for i in element_blocks]).astype(np.int64)
    offsets = np.cumsum([0] + [blocks[i][1].shape[0] for i in element_blocks])

    used = np.zeros(len(raw.points), dtype=bool)
    used[cells.ravel()] = True
    stray = [f"{d.shape[0]} {t}" for (t, d), k in zip(blocks, dims)
             if 0 < k < top and d.size and not used[d.ravel()].all()]
    if stray and top == 3:
        raise MeshError(f"{where}: mixed 2D/3D cells: {', '.join(stray)} cell(s) are not "
                        f"facets of the {cell_type} elements (a mesh holds one dimension; "
                        "lower-dimensional cells may only mark groups on its boundary)")
    if stray:
        raise MeshError(f"{where}: {', '.join(stray)} cell(s) do not lie on the "
                        f"{cell_type} elements")

    points = np.asarray(raw.points, dtype=float)
    dim = 3 if top == 3 else 2
    if points.shape[1] == 3 and dim == 2:
        z = points[used, 2]
        if np.ptp(z) > 1e-12 * max(1.0, float(np.ptp(points[used, :2], axis=0).max())):
            raise MeshError(f"{where}: the {cell_type} cells do not lie in a plane z = "
                            "constant (a 2D mesh needs one)")
        points = points[:, :2]
    elif points.shape[1] < dim:
        raise MeshError(f"{where}: {cell_type} cells need {dim}D points, the file has "
                        f"{points.shape[1]}D points")
    # drop points no element uses (e.g. geometry points); renumber
    new_index = np.full(len(points), -1, dtype=np.int64)
    new_index[used] = np.arange(int(used.sum()))
    points = points[used] * scale
    cells = new_index[cells]

    node_sets, cell_sets, facet_sets = _groups(raw, blocks, dims, top, element_blocks,
                                               offsets, new_index)
    mesh = Mesh(points=points, cells=cells, cell_type=ELEMENTS[cell_type],
                node_sets=node_sets, cell_sets=cell_sets, facet_sets=facet_sets)
    check_mesh(mesh, where)
    return mesh


def _check_entries(raw, blocks, where: str) -> None:
    """Finite coordinates; cells and named groups that refer to existing nodes and cells
    (a negative index would silently wrap around to the end of the list).

    Raises:
        MeshError naming the offending node, cell or group (0-based, as in the file).
    """
    points = np.asarray(raw.points)
    if points.ndim != 2 or points.shape[0] == 0 or not np.issubdtype(points.dtype, np.number):
        raise MeshError(f"{where}: the file has no node coordinates")
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1)).tolist()
    if bad:
        raise MeshError(f"{where}: {len(bad)} node(s) with a non-finite coordinate (NaN or "
                        f"inf): {_show(bad)} (0-based node indices); first: "
                        f"{points[bad[0]].tolist()}")
    n = points.shape[0]
    for t, d in blocks:
        if d.size == 0:
            continue
        if d.ndim != 2 or not np.issubdtype(d.dtype, np.number):
            raise MeshError(f"{where}: the {t} cells are not a table of node indices")
        if not np.issubdtype(d.dtype, np.integer) and not np.array_equal(d, np.round(d)):
            raise MeshError(f"{where}: the {t} cells hold node indices that are not integers")
        wrong = np.flatnonzero(((d < 0) | (d >= n)).any(axis=1)).tolist()
        if wrong:
            c = wrong[0]
            node = int(d[c][(d[c] < 0) | (d[c] >= n)][0])
            raise MeshError(f"{where}: {len(wrong)} {t} cell(s) refer to nodes the file does "
                            f"not have: {_show(wrong)} (0-based); cell {c} refers to node "
                            f"{node}, the file has nodes 0 to {n - 1}")
    for name, per_block in (raw.cell_sets or {}).items():
        if ":" in name:
            continue  # meshio's own bookkeeping (gmsh:bounding_entities), not a group
        for (t, d), idx in zip(blocks, per_block):
            idx = np.asarray(idx if idx is not None else [], dtype=np.int64).ravel()
            if idx.size and (idx.min() < 0 or idx.max() >= d.shape[0]):
                raise MeshError(f"{where}: group {name!r} refers to {t} cell "
                                f"{int(idx[(idx < 0) | (idx >= d.shape[0])][0])}; the file "
                                f"has {d.shape[0]} {t} cell(s)")
    for name, idx in (raw.point_sets or {}).items():
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise MeshError(f"{where}: node group {name!r} refers to node "
                            f"{int(idx[(idx < 0) | (idx >= n)][0])}; the file has nodes 0 "
                            f"to {n - 1}")


def _groups(raw, blocks, dims, top, element_blocks, offsets, new_index):
    node_sets: dict[str, np.ndarray] = {}
    cell_sets: dict[str, np.ndarray] = {}
    facet_sets: dict[str, np.ndarray] = {}
    sets = {name: s for name, s in (raw.cell_sets or {}).items() if ":" not in name}
    if not sets and "gmsh:physical" in raw.cell_data and raw.field_data:
        physical = raw.cell_data["gmsh:physical"]
        for name, (tag, gdim) in ((n, v[:2]) for n, v in raw.field_data.items()):
            sets[name] = [np.flatnonzero(np.asarray(physical[i]) == tag)
                          if dims[i] == gdim else np.zeros(0, np.int64)
                          for i in range(len(blocks))]
    for name, per_block in sets.items():
        nodes, elems, facets = [], [], []
        for i, idx in enumerate(per_block):
            if idx is None or len(idx) == 0:
                continue
            idx = np.asarray(idx, dtype=np.int64)
            nodes.append(blocks[i][1][idx].ravel())
            if i in element_blocks:
                elems.append(offsets[element_blocks.index(i)] + idx)
            elif dims[i] == top - 1 and blocks[i][0] in FACET_TYPES:
                facets.append(new_index[blocks[i][1][idx]])
        if nodes:
            n = new_index[np.unique(np.concatenate(nodes))]
            node_sets[name] = n[n >= 0]
        if elems:
            cell_sets[name] = np.unique(np.concatenate(elems))
        if len({f.shape[1] for f in facets}) == 1:  # one facet type (tri or quad faces)
            facet_sets[name] = np.concatenate(facets)
    for name, idx in (raw.point_sets or {}).items():
        n = new_index[np.unique(np.asarray(idx, dtype=np.int64))]
        n = n[n >= 0]
        node_sets[name] = np.union1d(node_sets.get(name, n), n)
    return node_sets, cell_sets, facet_sets


def element_measures(mesh: Mesh) -> np.ndarray:
    """Smallest signed Jacobian determinant of each element at its corners (simplices:
    d! times the signed volume); <= 0 for inverted or degenerate elements."""
    p = mesh.points[mesh.cells]
    d = mesh.dim
    if mesh.cell_type in ("tri3", "tet4"):
        return np.linalg.det(p[:, 1:d + 1] - p[:, :1])
    # quad4/hex8: corner Jacobians from the three (two) edges meeting at each corner
    if mesh.cell_type == "quad4":
        nxt, prv = [1, 2, 3, 0], [3, 0, 1, 2]
        e1, e2 = p[:, nxt] - p, p[:, prv] - p
        return np.linalg.det(np.stack([e1, e2], axis=-1)).min(axis=1)
    nbr = np.array([(1, 3, 4), (2, 0, 5), (3, 1, 6), (0, 2, 7),
                    (7, 5, 0), (4, 6, 1), (5, 7, 2), (6, 4, 3)])
    e = p[:, nbr] - p[:, :, None, :]  # (c, corner, 3 edges, xyz)
    return np.linalg.det(np.swapaxes(e, -1, -2)).min(axis=1)


def check_mesh(mesh: Mesh, where: str) -> None:
    """Refuse inverted or degenerate elements, coincident nodes and unconnected parts.

    Raises:
        MeshError naming ``where`` and the offending elements, nodes or parts.
    """
    length = mesh.characteristic_length()
    if length <= 0:
        raise MeshError(f"{where}: every node is at the same point")
    det = element_measures(mesh)
    scale = np.abs(det).max()
    inverted = np.flatnonzero(det < -1e-12 * scale).tolist()
    degenerate = np.flatnonzero(np.abs(det) <= 1e-12 * scale).tolist()
    if inverted or degenerate:
        parts = []
        if inverted:
            parts.append(f"{len(inverted)} inverted element(s): {_show(inverted)}")
        if degenerate:
            parts.append(f"{len(degenerate)} degenerate (zero-volume) element(s): "
                         f"{_show(degenerate)}")
        raise MeshError(f"{where}: {'; '.join(parts)} (0-based element indices)")
    from scipy.spatial import cKDTree  # on first use: a fifth of a second to import

    pairs = cKDTree(mesh.points).query_pairs(1e-9 * length, output_type="ndarray")
    if len(pairs):
        shown = ", ".join(f"{a}={b}" for a, b in pairs[:5].tolist())
        raise MeshError(f"{where}: {len(pairs)} pair(s) of coincident nodes ({shown}, "
                        "0-based): elements joined only through duplicated nodes are not "
                        "connected; merge the duplicates (Gmsh: Coherence)")
    n_parts, cell_part = cell_components(mesh)
    if n_parts > 1:
        counts = np.bincount(cell_part)
        raise MeshError(f"{where}: the mesh has {n_parts} unconnected parts (elements "
                        f"per part: {_show(counts.tolist())}): the system would be "
                        "singular; mesh one connected part")


def cell_components(mesh: Mesh) -> tuple[int, np.ndarray]:
    """Connected parts of the mesh (elements sharing a node are connected): their
    number and the part of every element (parts numbered by their first element).

    The graph is on nodes, each element a star from its first node to the others
    (nodes_per_cell - 1 edges an element): the element-to-element graph would hold
    some hundred neighbours per tet."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n, k = mesh.cells.shape
    first = np.repeat(mesh.cells[:, 0], k - 1)
    edges = sp.csr_matrix((np.ones(n * (k - 1), dtype=np.int8),
                           (first, mesh.cells[:, 1:].ravel())),
                          shape=(mesh.n_nodes, mesh.n_nodes))
    _, node_part = connected_components(edges, directed=False)
    part = node_part[mesh.cells[:, 0]]
    # renumber the parts that hold elements in the order of their first element
    found, first_cell, labels = np.unique(part, return_index=True, return_inverse=True)
    order = np.argsort(first_cell)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return int(found.size), rank[labels]
