"""The grid density filter keeps 1 / Hs on its proxy grid alone (at most (2R + 1)^dim
values) and looks it up per cell: bit for bit the per-cell 1 / Hs that the stencil gives
on the whole grid of ones, on a grid and on a rank's slab of it, and the forward and the
chain rule are what they were with that per-cell array."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.assembly.grid_layout import GridLayout
from femopt.filters.grid_filter import GridDensityFilter, proxy_index
from femopt.parallel.comm import Comm
from femopt.parallel.slabs import Slab
from femopt.parallel.stencil import SlabStencil

# (shape, spacing, radius): 2D and 3D, anisotropic spacing, axes shorter than 2R + 1
# (3 cells at reach 2, 2 cells at reach 3), one axis of one cell, entries at the radius
# within rounding
CASES = [((13, 9), (1.0, 0.5), 1.2),
         ((30, 4), (0.5, 1.0), 2.2),
         ((2, 2), (1.0, 1.0), 1.5),
         ((8, 6), (0.7, 0.7000000000000001), 2.1),
         ((9, 7, 6), (1.0, 1.0, 2.0), 2.6),
         ((3, 20, 5), (1.0, 0.3, 0.9), 1.7),
         ((12, 11, 10), (1.0, 1.0, 1.0), 3.0),
         ((40, 17, 1), (0.25, 0.5, 1.0), 0.9)]
IDS = ["x".join(map(str, c[0])) for c in CASES]


def _full_inv_hs(f: GridDensityFilter) -> np.ndarray:
    """1 / Hs per cell as the filter kept it before: the stencil on the whole grid of
    ones, its reciprocal in place."""
    inv = f.apply(np.ones(int(np.prod(f.shape))))
    np.reciprocal(inv, out=inv)
    return inv


@pytest.mark.parametrize("n, r, want", [(10, 2, [0, 1, 2, 2, 2, 2, 2, 2, 3, 4]),
                                        (6, 2, [0, 1, 2, 2, 3, 4]),
                                        (5, 2, [0, 1, 2, 3, 4]),
                                        (3, 2, [0, 1, 2]),
                                        (1, 3, [0])])
def test_proxy_index(n, r, want):
    assert proxy_index(n, r).tolist() == want


@pytest.mark.parametrize("shape, spacing, radius", CASES, ids=IDS)
def test_the_table_looked_up_is_the_whole_grids_inv_hs_bit_for_bit(shape, spacing, radius):
    f = GridDensityFilter(shape, spacing, radius)
    full = _full_inv_hs(f)
    assert f.inv_hs_table.size == np.prod(f.proxy_shape)
    assert f.inv_hs_table.size <= np.prod([2 * r + 1 for r in f.reach])
    assert f.inv_hs().tobytes() == full.tobytes()
    assert f.hs.tobytes() == (1.0 / full).tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape, spacing, radius", CASES, ids=IDS)
def test_forward_and_chain_rule_are_those_of_the_per_cell_array(shape, spacing, radius,
                                                                dtype):
    """rho = (H x) * (1 / Hs) and H (g * (1 / Hs)), 1 / Hs rounded to the field's dtype,
    as with the per-cell array: the same bits."""
    f = GridDensityFilter(shape, spacing, radius)
    inv = _full_inv_hs(f).astype(dtype)
    r = np.random.default_rng(7)
    x = r.uniform(size=inv.size).astype(dtype)
    g = r.standard_normal(inv.size).astype(dtype)
    rho, dx = f.forward(x), f.backward(x, g)
    assert rho.dtype == dx.dtype == dtype
    assert rho.tobytes() == (inv * f.apply(x)).tobytes()
    assert dx.tobytes() == f.apply(inv * g).tobytes()


class _Rank(Comm):
    """Rank ``rank`` of ``size`` for a slab's set-up alone (it sends nothing)."""

    def __init__(self, rank: int, size: int):
        super().__init__()
        self.rank, self.size = rank, size


@pytest.mark.parametrize("shape, spacing, radius, bounds", [
    ((9, 7, 12), (1.0, 1.0, 0.5), 1.3, [0, 2, 7, 12]),
    ((10, 15), (1.0, 0.4), 1.1, [0, 5, 10, 15]),
    ((6, 5, 9), (1.0, 1.0, 1.0), 2.5, [0, 3, 6, 9])], ids=["3d", "2d", "reach3"])
def test_a_slabs_inv_hs_is_its_part_of_the_whole_grids(shape, spacing, radius, bounds):
    """A rank's owned cells are cut by the whole grid's faces (ghost layers between them
    and the slab's ends): its 1 / Hs is the whole grid's, its layers taken."""
    full = _full_inv_hs(GridDensityFilter(shape, spacing, radius))
    p = int(np.prod(shape[:-1]))
    for rank in range(len(bounds) - 1):
        slab = Slab(GridLayout(shape, 1), _Rank(rank, len(bounds) - 1), bounds)
        stencil = SlabStencil(slab, spacing, radius)
        part = full[bounds[rank] * p:bounds[rank + 1] * p]
        assert stencil.inv_hs().tobytes() == part.tobytes()
        assert stencil.hs.tobytes() == (1.0 / part).tobytes()


@pytest.mark.parametrize("shape, spacing, radius", CASES, ids=IDS)
def test_the_kernels_entries_are_the_stencils(shape, spacing, radius):
    """The GPU kernel's list of entries (offsets and weights, z slowest) holds exactly the
    host stencil's entries and weights, and none of the box's corners beyond the radius:
    19 of 125 at radius 1.5."""
    f = GridDensityFilter(shape, spacing, radius)
    offsets, weights = f.entries()
    host = {tuple(o) + (0,) * (3 - len(o)): w for o, w in f.offsets()}
    got = {tuple(int(v) for v in o): w for o, w in zip(offsets, weights)}
    assert got.keys() == host.keys()
    assert all(got[k] == host[k] for k in host)
    order = [(o[2], o[1], o[0]) for o in offsets.tolist()]
    assert order == sorted(order)
    assert len(GridDensityFilter((9, 9, 9), (1.0,) * 3, 1.5).entries()[1]) == 19


# -- on the GPU --------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape, spacing, radius", [((14, 11, 9), (1.0, 0.8, 0.6), 1.7),
                                                    ((16, 3, 7), (0.5, 1.0, 1.0), 1.4),
                                                    ((15, 12), (1.0, 0.7), 2.05)],
                         ids=["3d", "short_axis", "2d"])
def test_gpu_kernels_look_up_the_table_as_the_numpy_twin(shape, spacing, radius, dtype):
    """Reach 2 to 3 per axis. The CUDA kernel's table is the per-cell 1 / Hs of the
    kernel on the whole grid of ones, bit for bit; its rho and chain rule equal the
    kernel with that per-cell array multiplied in (bit for bit) and the NumPy twin's (to
    rounding: the twin sums the offsets in another order)."""
    import cupy

    cpu = GridDensityFilter(shape, spacing, radius)
    gpu = GridDensityFilter(shape, spacing, radius, cupy)
    assert all(2 <= r <= 3 for r in gpu.reach)
    full = gpu.apply(cupy.ones(int(np.prod(shape))))
    cupy.reciprocal(full, out=full)
    assert bool((gpu.inv_hs() == full).all())
    assert bool((gpu.hs == 1.0 / full).all())
    np.testing.assert_allclose(cupy.asnumpy(full), cpu.inv_hs(), rtol=1e-14)

    r = np.random.default_rng(3)
    x = r.uniform(size=full.size).astype(dtype)
    g = r.standard_normal(full.size).astype(dtype)
    xd, gd, inv = cupy.asarray(x), cupy.asarray(g), full.astype(dtype)
    rho, dx = gpu.forward(xd), gpu.backward(xd, gd)
    assert rho.dtype == dx.dtype == dtype
    assert bool((rho == inv * gpu.apply(xd)).all())
    assert bool((dx == gpu.apply(inv * gd)).all())
    tol = 1e-13 if dtype == np.float64 else 2e-6
    for got, want in ((rho, cpu.forward(x)), (dx, cpu.backward(x, g))):
        ref = want.astype(np.float64)
        err = np.abs(cupy.asnumpy(got).astype(np.float64) - ref).max()
        assert err <= tol * np.abs(ref).max(), err
