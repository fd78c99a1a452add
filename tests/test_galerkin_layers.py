"""The first Galerkin level made and assembled by chunks of cell layers
(``galerkin.galerkin_layers``, ``galerkin.assemble_level``,
``StructuredCSR.assemble_layers``): on NumPy the whole array's CSR values and the next
level's cell matrices bit for bit, whatever the chunks, and a multigrid hierarchy
built by small chunks equal to one built by one chunk; on the GPU (``gpu``) the
chunked scatter against the whole one and the NumPy twin to rounding (its atomic adds
are not ordered either way)."""

from __future__ import annotations

import numpy as np
import pytest

import femopt.solvers.galerkin as galerkin
from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.structured_csr import StructuredCSR
from femopt.assembly.structured_scatter import add_layers_numpy
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from femopt.mesh import structured_grid

# 2D and 3D, k = 1, 2, 3; layers along the slowest axis: 1, odd and even counts
GRIDS = [((5, 4), 1), ((6, 7), 2), ((4, 1), 3), ((3, 4, 2), 1), ((4, 3, 5), 3),
         ((2, 2, 6), 3), ((5, 2, 3), 2)]


def _pattern(shape, k, seed=0):
    lay = GridLayout(shape, k)
    fixed = np.random.default_rng(seed).uniform(size=lay.n_dofs) < 0.2
    return StructuredCSR(lay, fixed)


def _chunks(cells, layer, n_layers, per, top_first=True):
    bounds, stop = [], n_layers
    while stop > 0:
        bounds.append((max(0, stop - per), stop))
        stop = bounds[-1][0]
    if not top_first:
        bounds = bounds[::-1]
    return [(a, cells[a * layer:b * layer]) for a, b in bounds]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape, k", GRIDS)
def test_assembly_by_layers_is_the_whole_arrays_bit_for_bit(shape, k, dtype):
    """Chunks of 1, 2, 3 layers and all of them, top first, give the values of one
    assembly of the whole array to the bit (negative zeros among the entries, fixed
    dofs dropped); the same chunks bottom first give other bits (the sums' order is
    what the top-first order keeps), where a node has contributions from both sides."""
    p = _pattern(shape, k)
    lay = p.layout
    rng = np.random.default_rng(1)
    cells = rng.standard_normal((lay.n_cells, lay.nd, lay.nd)).astype(dtype)
    cells[rng.uniform(size=cells.shape) < 0.05] = -0.0
    whole = p.assemble_data(cells)
    layer, n = int(np.prod(shape[:-1])), shape[-1]
    for per in sorted({1, 2, 3, n}):
        got = p.assemble_layers(_chunks(cells, layer, n, per))
        assert got.dtype == dtype
        np.testing.assert_array_equal(_bits(got), _bits(whole))
    if n > 1 and lay.n_cells * lay.nd > 200:
        data = np.zeros(p.nnz + 1, dtype=dtype)
        for first, part in _chunks(cells, layer, n, 1, top_first=False):
            add_layers_numpy(p, data, part, first)
        np.testing.assert_allclose(data[:p.nnz][~np.isin(np.arange(p.nnz), p.diag_slot[
            p.fixed_dofs])], whole[~np.isin(np.arange(p.nnz), p.diag_slot[p.fixed_dofs])],
            rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
        assert not np.array_equal(_bits(data[:p.nnz]), _bits(whole))


def test_chunks_must_come_top_first_and_cover_the_grid():
    p = _pattern((3, 2, 4), 2)
    cells = np.ones((p.layout.n_cells, p.layout.nd, p.layout.nd))
    with pytest.raises(ValueError, match="top first"):
        p.assemble_layers(_chunks(cells, 6, 4, 1, top_first=False))
    with pytest.raises(ValueError, match="below 1"):
        p.assemble_layers(_chunks(cells, 6, 4, 1)[:-1])


@pytest.mark.parametrize("n, even, per", [(7, False, 3), (8, True, 3), (8, True, 1),
                                          (6, True, 6), (1, False, 5)])
def test_layer_chunks_are_bounded_and_top_first(n, even, per):
    """Chunks of ``per`` layers' bytes (two at least, even from even layers when the
    next level coarsens them), top first, covering every layer once."""
    chunks = galerkin.layer_chunks(n, 10, even, max_bytes=10 * per)
    assert chunks[0][1] == n and chunks[-1][0] == 0
    assert all(a == d for (a, _), (_, d) in zip(chunks, chunks[1:]))
    size = max(per - per % 2, 2) if even else per
    assert all(0 < b - a <= size for a, b in chunks)
    if even:
        assert all(a % 2 == 0 and (b - a) % 2 == 0 for a, b in chunks)


def _elasticity(shape):
    mesh = structured_grid(shape, [float(s) for s in shape])
    return LinearElasticity(ElasticityOptions(), mesh).element_matrices()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ratio", [2, 4])
@pytest.mark.parametrize("shape", [(16, 8, 16), (16, 8), (8, 8, 8)])
def test_a_galerkin_level_by_chunks_is_the_whole_levels_bit_for_bit(shape, ratio, dtype):
    """``assemble_level`` of ``galerkin_layers`` (chunks of 2 layers, and one chunk)
    gives the CSR values of the whole ``galerkin_cell_matrices`` assembled at once and
    the next level's ``coarsen_cell_matrices`` of the whole array, to the bit."""
    fine = GridLayout(shape, len(shape))
    coarse = GridLayout(tuple(n // ratio for n in shape), fine.k)
    rng = np.random.default_rng(3)
    scale = rng.uniform(1e-9, 1.0, fine.n_cells).astype(dtype)
    ke = _elasticity(shape)
    child = galerkin.child_matrices(ke, fine.dim, fine.k, ratio).astype(dtype)
    fixed = np.zeros(coarse.n_dofs, dtype=bool)
    fixed[:coarse.k * 3] = True
    p = StructuredCSR(coarse, fixed)
    whole = galerkin.galerkin_cell_matrices(fine, scale, ke, ratio, child)
    data = p.assemble_data(whole)
    below = galerkin.coarsen_cell_matrices(coarse, whole)
    layer = int(np.prod(coarse.shape[:-1])) * whole[0].nbytes
    for max_bytes in (1, 3 * layer, None):
        chunks = galerkin.galerkin_layers(fine, scale, ke, ratio, child, even=True,
                                          max_bytes=max_bytes)
        got, nxt = galerkin.assemble_level(p, chunks, coarsen=True)
        np.testing.assert_array_equal(_bits(got), _bits(data))
        np.testing.assert_array_equal(_bits(nxt), _bits(below))
    got, nxt = galerkin.assemble_level(p, whole)
    assert nxt is None
    np.testing.assert_array_equal(_bits(got), _bits(data))


@pytest.mark.parametrize("coarse", ["hybrid", "galerkin"])
def test_a_hierarchy_by_small_chunks_is_the_one_by_one_chunk(coarse, monkeypatch):
    """The multigrid's Galerkin levels with chunks of two layers equal those made in one
    chunk (the whole array, as before chunks), level by level, to the bit."""
    from femopt.solvers.multigrid import MultigridOptions, MultigridSolver

    shape = (16, 8, 16)
    lay = GridLayout(shape, 3)
    ke = _elasticity(shape)
    scale = np.random.default_rng(4).uniform(1e-3, 1.0, lay.n_cells)
    fixed = np.zeros(lay.n_dofs, dtype=bool)
    fixed[::(lay.n_nodes // 40)] = True
    levels = []
    for chunk in (2**40, 1):
        monkeypatch.setattr(galerkin, "CHUNK_BYTES", chunk)
        mg = MultigridSolver(MultigridOptions(coarsest_size=30), lay)
        mg.use_coarse_operator(coarse)
        mg.update_grid_operator(scale, ke, fixed)
        levels.append([lev.op.data for lev in mg.levels if hasattr(lev.op, "data")])
    assert len(levels[0]) >= 2
    for a, b in zip(*levels):
        np.testing.assert_array_equal(_bits(a), _bits(b))


# -- on the GPU --------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", GRIDS)
def test_device_assembly_by_layers_is_the_whole_ones_to_rounding(shape, k, dtype):
    """The device's scatter by chunks of layers (each chunk's cells from its first
    cell) against one launch over the whole array and the NumPy twin: equal to
    rounding (atomic adds, in no fixed order either way), exactly where every entry
    is an integer (the sums exact in any order)."""
    import cupy

    host = _pattern(shape, k, seed=5)
    dev = StructuredCSR(host.layout, cupy.asarray(host.fixed))
    lay = host.layout
    rng = np.random.default_rng(6)
    layer, n = int(np.prod(shape[:-1])), shape[-1]
    for integer in (False, True):
        cells = rng.standard_normal((lay.n_cells, lay.nd, lay.nd))
        if integer:
            cells = np.round(8 * cells)
        cells = cells.astype(dtype)
        ref = host.assemble_data(cells)
        whole = cupy.asnumpy(dev.assemble_data(cupy.asarray(cells)))
        for per in sorted({1, 2, n}):
            got = cupy.asnumpy(dev.assemble_layers(_chunks(cupy.asarray(cells), layer, n, per)))
            if integer:
                np.testing.assert_array_equal(got, ref)
            else:
                tol = 1e-12 if dtype == np.float64 else 2e-5
                np.testing.assert_allclose(got, whole, rtol=tol, atol=tol * 8)
                np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * 8)


def test_a_chunk_that_does_not_coarsen_on_its_own_is_refused():
    """assemble_level coarsens each chunk by itself: a chunk of an odd layer count, or
    from an odd layer, is refused rather than coarsened into the wrong pairs."""
    from femopt.assembly.structured_csr import StructuredCSR
    from femopt.assembly.grid_layout import GridLayout
    from femopt.solvers.galerkin import assemble_level

    lay = GridLayout((4, 4, 4), 1)
    pattern = StructuredCSR(lay, np.zeros(lay.n_dofs, dtype=bool))
    cells = np.ones((lay.n_cells, 8, 8))
    layer = 16
    good = [(2, cells[2 * layer:]), (0, cells[:2 * layer])]
    assemble_level(pattern, good, coarsen=True)
    bad = [(1, cells[layer:]), (0, cells[:layer])]
    with pytest.raises(ValueError, match="does not coarsen on its own"):
        assemble_level(pattern, bad, coarsen=True)
