"""The benchmarks' uniform refinement of a tet mesh (benchmarks/bracket_meshes.py
refined_mesh), how a mesh eight times finer is made where gmsh is not installed."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from femopt.mesh.meshfile import element_measures, read_mesh_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _faces(cells: np.ndarray) -> tuple[int, int, int]:
    """(boundary faces, interior faces, most cells sharing a face)."""
    f = np.concatenate([cells[:, [0, 1, 2]], cells[:, [0, 1, 3]], cells[:, [0, 2, 3]],
                        cells[:, [1, 2, 3]]])
    f.sort(axis=1)
    _, n = np.unique(f, axis=0, return_counts=True)
    return int((n == 1).sum()), int((n == 2).sum()), int(n.max())


def test_refined_bracket_is_eight_times_finer_conforming_and_keeps_its_groups(tmp_path):
    """Every tet into 8 and every boundary triangle into 4: the same volume (each group's
    too), positive volumes, a conforming mesh (no face in three cells, four times the
    boundary faces), the named groups of facets and cells with their children."""
    from bracket_meshes import refined_mesh

    src = tmp_path / "bracket.msh"
    shutil.copy(ROOT / "problems" / "meshes" / "bracket_3d.msh", src)
    out = refined_mesh(src)
    a, b = read_mesh_file(src), read_mesh_file(out)
    assert b.n_cells == 8 * a.n_cells
    va, vb = element_measures(a), element_measures(b)
    assert vb.min() > 0
    assert abs(vb.sum() - va.sum()) <= 1e-9 * va.sum()
    ring_a, ring_b = a.cell_sets["lug_ring"], b.cell_sets["lug_ring"]
    assert ring_b.size == 8 * ring_a.size
    assert abs(vb[ring_b].sum() - va[ring_a].sum()) <= 1e-9 * va[ring_a].sum()
    for name in ("bolts", "lug"):
        assert len(b.facet_sets[name]) == 4 * len(a.facet_sets[name])
    (bound_a, _, _), (bound_b, inner_b, most) = _faces(a.cells), _faces(b.cells)
    assert bound_b == 4 * bound_a and most == 2
    assert 2 * inner_b + bound_b == 4 * b.n_cells
    assert refined_mesh(src) == out  # made once
