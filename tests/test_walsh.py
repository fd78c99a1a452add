"""The hex8 element matrix in the Walsh basis of the corners (femopt.assembly.walsh): the
block structure of mirror-symmetric element matrices, the butterfly form of K0 u_e, and
the NumPy twin of the Walsh apply kernel's data flow against the reference apply."""

from __future__ import annotations

import numpy as np
import pytest

import femopt.assembly.matrix_free as mf
from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.matrix_free import apply_numpy, cell_forces, hex8_variant
from femopt.assembly.walsh import (
    apply_tiled_numpy,
    mirror_characters,
    walsh_cell_forces,
    walsh_factor,
    walsh_inverse,
    walsh_matrix,
    walsh_prelude,
    walsh_transform,
)
from femopt.mesh import structured_grid
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from femopt.physics.heat import HeatConduction, HeatOptions


def box_matrix(kind: str, size=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The element matrix of one box cell of ``size``."""
    mesh = structured_grid((1, 1, 1), size)
    if kind == "elasticity":
        return LinearElasticity(ElasticityOptions(nu=0.3), mesh).element_matrices()
    return HeatConduction(HeatOptions(), mesh).element_matrices()


def random_symmetric(n, r):
    a = r.standard_normal((n, n))
    return a + a.T


def test_walsh_matrix_is_orthogonal_and_symmetric_in_bit_order():
    w = walsh_matrix()
    np.testing.assert_array_equal(w @ w.T, 8 * np.eye(8))
    assert set(np.unique(w)) == {-1.0, 1.0}
    assert np.all(w[0] == 1)


@pytest.mark.parametrize("kind, k, nonzeros", [("elasticity", 3, 45), ("heat", 1, 7)])
@pytest.mark.parametrize("size", [(1.0, 1.0, 1.0), (1.0, 2.0, 0.5)], ids=["cube", "box"])
def test_mirror_symmetric_matrix_is_block_diagonal(kind, k, nonzeros, size):
    ke = box_matrix(kind, size)
    fac = walsh_factor(ke, k)
    assert fac.blocked
    # the exact transform, before any entry is snapped: off-block entries are rounding
    w = np.zeros((8 * k, 8 * k))
    for c in range(k):
        w[c * 8:(c + 1) * 8, c::k] = walsh_matrix()
    m = w @ ke @ w.T / 64
    ch = mirror_characters(k)
    off = np.abs(m[ch[:, None] != ch[None, :]]).max()
    assert off <= 1e-15 * np.abs(m).max()
    # elasticity: 8 blocks of 3, translations are zero rows; heat: diagonal, constant mode 0
    assert fac.nonzeros == nonzeros
    zero_rows = np.flatnonzero(~np.any(fac.m != 0, axis=1))
    np.testing.assert_array_equal(zero_rows, [0, 8, 16] if k == 3 else [0])
    np.testing.assert_allclose(fac.m, m, rtol=0, atol=1e-13 * np.abs(m).max())


def test_cube_blocks_have_the_expected_shapes():
    fac = walsh_factor(box_matrix("elasticity"), 3)
    ch = mirror_characters(3)
    sizes = []
    for character in range(8):
        idx = np.flatnonzero(ch == character)
        block = fac.m[np.ix_(idx, idx)]
        np.testing.assert_array_equal(block, block.T)
        sizes.append(int(np.count_nonzero(block)))
    # character 0 and 7: full 3x3; e_x, e_y, e_z: a translation row and column are zero
    assert sorted(sizes) == [4, 4, 4, 5, 5, 5, 9, 9]
    assert sum(sizes) == 45


@pytest.mark.parametrize("kind, k", [("elasticity", 3), ("heat", 1), ("random", 3)])
def test_butterflies_reproduce_the_element_matrix(kind, k):
    r = np.random.default_rng(3)
    ke = random_symmetric(8 * k, r) if kind == "random" else box_matrix(kind)
    fac = walsh_factor(ke, k)
    assert fac.blocked == (kind != "random")
    if kind == "random":
        assert fac.nonzeros == (8 * k) ** 2
    ue = r.standard_normal((8 * k, 200))
    s = r.uniform(1e-9, 1.0, 200)
    np.testing.assert_allclose(walsh_inverse(walsh_transform(ue, k), k), 8 * ue,
                               rtol=0, atol=1e-13)
    ref = cell_forces(ue, s, ke)
    got = walsh_cell_forces(ue, s, fac)
    assert np.abs(got - ref).max() <= 1e-14 * np.abs(ref).max()
    got32 = walsh_cell_forces(ue.astype(np.float32), s.astype(np.float32), fac)
    assert got32.dtype == np.float32
    assert np.abs(got32 - ref).max() <= 2e-6 * np.abs(ref).max()


def test_factor_checks_the_shape():
    with pytest.raises(ValueError, match="24 x 24"):
        walsh_factor(np.eye(8), 3)


def test_prelude_lists_the_nonzeros_and_used_rows():
    fac = walsh_factor(box_matrix("elasticity"), 3)
    text = walsh_prelude(fac)
    values = text.split("{", 2)[2].split("}")[0].split(", ")
    assert len(values) == 576
    assert sum(float.fromhex(v) != 0.0 for v in values) == 45
    rows = text.split("bool v[24] = {")[1].split("}")[0].split(", ")
    assert rows.count("false") == 3 and rows.count("true") == 21


GRIDS = [((40, 9, 13), 3), ((5, 4, 6), 1), ((33, 2, 1), 3), ((1, 15, 3), 1)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("rows, chunk", [(8, 16), (4, 3), (2, 1)])
@pytest.mark.parametrize("shape, k", GRIDS)
@pytest.mark.parametrize("matrix", ["K0", "random"])
def test_tiled_twin_equals_reference_apply(shape, k, rows, chunk, matrix, dtype):
    r = np.random.default_rng()
    lay = GridLayout(shape, k)
    ke = (box_matrix("elasticity" if k == 3 else "heat") if matrix == "K0"
          else random_symmetric(lay.nd, r))
    scale = r.uniform(1e-9, 1, lay.n_cells)
    free = r.uniform(size=lay.n_dofs) > 0.2
    u = r.standard_normal(lay.n_dofs) * free
    z = r.standard_normal(lay.n_dofs)
    ref = apply_numpy(lay, u, scale, ke, free, 0.5, -1.5, z)
    got = apply_tiled_numpy(lay, u.astype(dtype), scale.astype(dtype), walsh_factor(ke, k),
                            free, 0.5, -1.5, z.astype(dtype), rows=rows, chunk=chunk)
    assert got.dtype == dtype
    tol = 1e-13 if dtype == np.float64 else 1e-5
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


def test_variant_choice(monkeypatch):
    k0 = box_matrix("elasticity")
    r = np.random.default_rng(0)
    lay = GridLayout((4, 4, 4), 3)
    dense = random_symmetric(24, r)
    assert hex8_variant("float", k0, lay, 1) == mf.HEX8_DEFAULT["float"]
    monkeypatch.setattr(mf, "HEX8_DEFAULT", {"double": "walsh", "float": "walsh"})
    assert hex8_variant("double", k0, lay, 1) == "walsh"
    assert hex8_variant("double", dense, lay, 1) == "columns"  # dense Walsh form
    assert hex8_variant("double", dense, lay, 1, "walsh") == "walsh"  # asked for: exact
    assert hex8_variant("double", k0, lay, 8) == "gather"  # Galerkin children
    assert hex8_variant("double", k0, GridLayout((4, 4), 2), 1) == "gather"
    monkeypatch.setattr(mf, "HEX8_VARIANT", "walsh")
    assert hex8_variant("float", dense, lay, 1) == "walsh"
    with pytest.raises(ValueError, match="unknown hex8 apply variant 'wals'"):
        hex8_variant("float", k0, lay, 1, "wals")
