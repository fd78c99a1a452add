"""The fixed-pattern assembly (femopt/assembly/sparse.py): the pattern built on the node
graph and the gather product G^T s against an assembly from scratch, on random meshes
with 1, 2 and 3 dofs per node; the scatter map the GPU paths read gives the same values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from femopt.assembly.sparse import FixedPatternAssembler


def _random_mesh(k: int, npc: int, seed: int):
    rng = np.random.default_rng(seed)
    n_nodes, n_cells = 120, 300
    cells = np.array([rng.choice(n_nodes, npc, replace=False) for _ in range(n_cells)])
    cell_dofs = (cells[:, :, None] * k + np.arange(k)).reshape(n_cells, -1)
    n_dofs = n_nodes * k
    free = np.sort(rng.choice(n_dofs, int(0.8 * n_dofs), replace=False))
    return rng, cell_dofs, n_dofs, free


def _from_scratch(cell_dofs, n_dofs, free, scale, ke) -> sp.csr_matrix:
    n_cells, nd = cell_dofs.shape
    ke = np.broadcast_to(ke, (n_cells, nd, nd))
    rows = np.repeat(cell_dofs, nd, axis=1).ravel()
    cols = np.tile(cell_dofs, (1, nd)).ravel()
    full = sp.csr_matrix(((scale[:, None, None] * ke).ravel(), (rows, cols)),
                         shape=(n_dofs, n_dofs))
    return full[free][:, free].tocsr()


@pytest.mark.parametrize("k,npc", [(1, 4), (2, 4), (3, 4), (3, 8)])
def test_gather_assembly_equals_an_assembly_from_scratch(k, npc):
    rng, cell_dofs, n_dofs, free = _random_mesh(k, npc, seed=10 * k + npc)
    asm = FixedPatternAssembler(cell_dofs, n_dofs, free, dofs_per_node=k)
    assert asm.k == k
    nd = cell_dofs.shape[1]
    scale = rng.uniform(0.1, 1.0, len(cell_dofs))
    for ke in (rng.standard_normal((len(cell_dofs), nd, nd)), rng.standard_normal((nd, nd))):
        got = asm.assemble(scale, ke)
        ref = _from_scratch(cell_dofs, n_dofs, free, scale, ke)
        ref.sort_indices()
        assert got.has_sorted_indices and got.nnz == ref.nnz
        assert np.array_equal(got.indptr, ref.indptr)
        assert np.array_equal(got.indices, ref.indices)
        assert np.abs(got.data - ref.data).max() <= 1e-12 * np.abs(ref.data).max()
        # the scatter map (GPU paths): the same values from a bincount of the entries
        flat = np.broadcast_to(ke, (len(cell_dofs), nd, nd)) * scale[:, None, None]
        scattered = np.bincount(asm.scatter, weights=flat.reshape(-1)[asm.keep],
                                minlength=asm.nnz)
        assert np.array_equal(scattered, got.data)
        assert np.array_equal(asm._cell * nd * nd + asm._local, asm.keep)


def test_springs_land_on_the_diagonal():
    rng, cell_dofs, n_dofs, free = _random_mesh(3, 4, seed=5)
    asm = FixedPatternAssembler(cell_dofs, n_dofs, free, dofs_per_node=3)
    springs = rng.uniform(0.0, 1.0, n_dofs)
    asm.add_constant(diagonal=springs)
    m = sp.csr_matrix((asm.constant, asm.indices, asm.indptr), shape=asm.shape)
    assert np.array_equal(m.diagonal(), springs[free])
    assert np.count_nonzero(m.data) == free.size


def test_cells_that_are_not_whole_nodes_fall_back_to_dofs():
    _, cell_dofs, n_dofs, free = _random_mesh(3, 4, seed=2)
    shuffled = cell_dofs[:, ::-1].copy()  # not node-major: a * k + c breaks
    asm = FixedPatternAssembler(shuffled, n_dofs, free, dofs_per_node=3)
    assert asm.k == 1
    scale = np.ones(len(cell_dofs))
    ke = np.arange(144.0).reshape(12, 12)
    ref = _from_scratch(shuffled, n_dofs, free, scale, ke)
    assert abs(asm.assemble(scale, ke) - ref).max() <= 1e-12 * abs(ref).max()


@pytest.mark.parametrize("npc,seed", [(4, 1), (8, 2), (3, 3)])
def test_node_pairs_by_counting_equal_np_unique_of_the_keys(npc, seed):
    """The node graph's pairs (sorted) and each (cell, a, b)'s pair equal np.unique's of
    the keys a * n_nodes + b exactly, with nodes that no cell uses and rows whose first
    column equals the row before's last."""
    from femopt.assembly.sparse import node_pairs

    rng = np.random.default_rng(seed)
    n_nodes = 150
    cells = np.array([rng.choice(n_nodes - 10, npc, replace=False) for _ in range(400)])
    pair, rows, cols = node_pairs(cells, n_nodes)
    keys = (cells[:, :, None] * n_nodes + cells[:, None, :]).reshape(-1)
    want, inverse = np.unique(keys, return_inverse=True)
    assert pair.shape == (400, npc, npc)
    assert np.array_equal(pair.reshape(-1), inverse.reshape(-1))
    assert np.array_equal(rows * n_nodes + cols, want)
    assert rows.size == want.size > 400
