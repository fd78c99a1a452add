"""The smoothers' inverse diagonal: float64 and float32 values, or bfloat16 bits where the
V-cycle is float32 (``InverseDiagonal``): the rounding against an integer reference, the
smooth step and D^-1 r on the packed diagonal against the same values unpacked, the
multigrid's levels, and on the GPU the kernels against the NumPy twin bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.solvers.multigrid import MultigridOptions, MultigridSolver
from femopt.solvers.smoothers import (
    InverseDiagonal,
    PolynomialSmoother,
    bfloat16_bits,
    bfloat16_values,
    estimate_lambda_max,
    smooth_step_numpy,
)
from grid_cantilever import grid_cantilever, truss_design

# the largest finite bfloat16 (0x7F7F) and the float32 halfway between it and 2^128
BF16_MAX_BITS, HALFWAY_TO_INF = 0x7F7F, 0x7F7F8000


def rounding_cases(seed: int = 0) -> np.ndarray:
    """Float32 bit patterns, positive and normal: random ones over most exponents, and
    around every kind of tie (the dropped half exactly 0x8000 below an even and an odd
    kept part, one ulp either side of it), exact bfloat16s, and mantissas of ones whose
    rounding carries into the exponent."""
    rng = np.random.default_rng(seed)
    kept = rng.integers(0x0080, 0x7F7E, 4000, dtype=np.uint32)  # normal, below the max
    kept[::2] &= ~np.uint32(1)  # half of them even, half odd
    kept[1::2] |= 1
    around_ties = [(kept << 16) | low for low in (0x8000, 0x7FFF, 0x8001, 0x0000, 0xFFFF)]
    random = rng.integers(0x00800000, HALFWAY_TO_INF, 20000, dtype=np.uint32)
    carries = np.array([0x3F7FFFFF, 0x3FFFFFFF, 0x007FFFFF + 0x00800000, 0x3F7F8000],
                       dtype=np.uint32)
    return np.concatenate(around_ties + [random, carries]).astype(np.uint32)


def reference_bits(u: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even of float32 bits ``u`` (positive, below HALFWAY_TO_INF) to
    bfloat16, by comparing the two neighbours' exact distances (float64 holds them
    exactly): the truncation ``lo`` and the next bfloat16 ``lo + 1``."""
    lo = (u >> 16).astype(np.uint32)
    hi = lo + 1
    v = u.view(np.float32).astype(np.float64)
    below = (lo << 16).view(np.float32).astype(np.float64)
    above = (hi << 16).view(np.float32).astype(np.float64)
    d_lo, d_hi = v - below, above - v
    take_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (lo % 2 == 1))
    return np.where(take_hi, hi, lo).astype(np.uint16)


def test_bfloat16_bits_round_to_nearest_even_as_the_reference():
    u = rounding_cases()
    v = u.view(np.float32)
    bits = bfloat16_bits(v)
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(bits, reference_bits(u))
    # the ties themselves: a dropped half of exactly 0x8000 keeps an even part, rounds an
    # odd one up
    kept = u >> 16
    tie = (u & 0xFFFF) == 0x8000
    assert tie.sum() >= 4000
    np.testing.assert_array_equal(bits[tie], np.where(kept[tie] % 2 == 0, kept[tie],
                                                      kept[tie] + 1))
    # a carry into the exponent: 1 - 2^-24 rounds to 1, (2 - 2^-23) 2^-126 to 2^-125
    assert bfloat16_bits(np.float32([1.0 - 2.0**-24]))[0] == 0x3F80
    assert bfloat16_bits(np.array([0x00FFFFFF], np.uint32).view(np.float32))[0] == 0x0100
    # beyond the largest bfloat16 by half its ulp or more: infinity; zero stays zero
    edge = np.array([HALFWAY_TO_INF - 1, HALFWAY_TO_INF, 0x7F7FFFFF, 0x7F800000, 0],
                    dtype=np.uint32).view(np.float32)
    assert bfloat16_bits(edge).tolist() == [BF16_MAX_BITS, 0x7F80, 0x7F80, 0x7F80, 0]


def test_widened_bfloat16_is_within_half_an_ulp():
    """decode(encode(v)) is within 2^-8 of v relative (half an ulp of bfloat16's 8
    significant bits), reached by the ties, and encoding it again changes nothing."""
    u = rounding_cases(1)
    v = u.view(np.float32)
    w = bfloat16_values(bfloat16_bits(v))
    assert w.dtype == np.float32
    rel = np.abs(w.astype(np.float64) - v) / v.astype(np.float64)
    assert rel.max() <= 2.0**-8
    assert rel.max() > 0.99 * 2.0**-8  # the ties reach the bound
    np.testing.assert_array_equal(bfloat16_bits(w), bfloat16_bits(v))  # exact round trip
    out = np.empty_like(v)
    assert bfloat16_values(bfloat16_bits(v), out) is out
    np.testing.assert_array_equal(out, w)


def test_the_inverse_diagonal_is_packed_where_it_is_float32():
    rng = np.random.default_rng(2)
    d = rng.uniform(0.01, 100.0, 1001)
    inv64 = InverseDiagonal.of(d.copy(), np.float64)
    assert not inv64.packed and inv64.dtype == np.float64 and inv64.nbytes == 8 * d.size
    np.testing.assert_array_equal(inv64.values(), 1.0 / d)
    inv32 = InverseDiagonal.of(d.astype(np.float32), np.float32)
    assert inv32.packed and inv32.dtype == np.float32 and inv32.nbytes == 2 * d.size
    plain = InverseDiagonal.of(d.astype(np.float32), np.float32, pack=False)
    assert not plain.packed and plain.nbytes == 4 * d.size
    np.testing.assert_array_equal(plain.values(), (1.0 / d.astype(np.float32)))
    np.testing.assert_array_equal(inv32.values(), bfloat16_values(bfloat16_bits(
        plain.values())))
    # from a float64 diagonal: 1 / d in float64, then float32, then bfloat16
    from64 = InverseDiagonal.of(d.copy(), np.float32)
    np.testing.assert_array_equal(from64.data, bfloat16_bits((1.0 / d).astype(np.float32)))


@pytest.mark.parametrize("c1", [0.0, 0.37], ids=["c1_zero", "c1"])
def test_the_packed_smooth_step_and_times_are_the_widened_values(c1):
    """With bfloat16 bits the step and D^-1 r equal those of the same values held as
    float32, bit for bit; the step's two orders ((D^-1 r) c2, c1 d + (c2 D^-1) r) are
    the kernel's."""
    rng = np.random.default_rng(3)
    n = 10_007
    inv = InverseDiagonal(bfloat16_bits(rng.uniform(0.1, 3.0, n).astype(np.float32)))
    wide = InverseDiagonal(inv.values())
    x, d, r = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    got = [x.copy(), d.copy()]
    want = [x.copy(), d.copy()]
    smooth_step_numpy(got[0], got[1], r, inv, c1, 1.7)
    smooth_step_numpy(want[0], want[1], r, wide, c1, 1.7)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    v = wide.values()
    c2 = np.float32(1.7)
    step = (v * r) * c2 if c1 == 0.0 else np.float32(c1) * d + (c2 * v) * r
    np.testing.assert_array_equal(got[1], step)
    np.testing.assert_array_equal(got[0], x + step)
    # D^-1 r: new, into another vector, in place
    np.testing.assert_array_equal(inv.times(r), v * r)
    out = np.empty_like(r)
    assert inv.times(r, out=out) is out
    np.testing.assert_array_equal(out, v * r)
    rr = r.copy()
    inv.times(rr, out=rr)
    np.testing.assert_array_equal(rr, v * r)


def cantilever(shape):
    case = grid_cantilever(shape)
    scale = 1e-9 + truss_design(shape) ** 3 * (1 - 1e-9)
    return case, scale


def solved(case, scale, **options):
    mg = MultigridSolver(MultigridOptions(rtol=1e-8, coarsest_size=100, **options),
                         case.layout)
    mg.update_grid_operator(scale, case.ke, case.fixed)
    mg.solve_grid(case.load)
    return mg


def test_a_float32_v_cycle_keeps_its_inverse_diagonals_as_bfloat16(monkeypatch):
    """Every smoothed level of a float32 V-cycle holds 2 bytes a dof, a float64 one 8;
    CG needs the iterations of the float32 diagonal within one (measured: the same at
    48x24x24, one fewer with hybrid coarse levels), and the smoothers' Lanczos estimate
    is that of the rounded diagonal's D~^-1 A."""
    case, scale = cantilever((24, 12, 12))
    mg = solved(case, scale, precision="float32")
    for lev in mg.levels[:-1]:
        inv = lev.smoother.inv_diag
        assert inv.packed and inv.nbytes == 2 * lev.layout.n_dofs
    lev = mg.levels[0]
    est = estimate_lambda_max(lev.op, lev.smoother.inv_diag, lev.free, 10)
    wide = estimate_lambda_max(lev.op, InverseDiagonal(lev.smoother.inv_diag.values()),
                               lev.free, 10)
    assert est == wide
    for lev in solved(case, scale, precision="float64").levels[:-1]:
        assert lev.smoother.inv_diag.data.dtype == np.float64
    of = InverseDiagonal.of.__func__
    monkeypatch.setattr(InverseDiagonal, "of", classmethod(
        lambda cls, d, dtype, pack=True: of(cls, d, dtype, pack=False)))
    unpacked = solved(case, scale, precision="float32")
    assert not unpacked.levels[0].smoother.inv_diag.packed
    assert abs(mg.last.iterations - unpacked.last.iterations) <= 1, (
        mg.last.iterations, unpacked.last.iterations)


# -- on the GPU ----------------------------------------------------------------------------


def _cupy():
    import cupy

    return cupy


@pytest.mark.gpu
def test_gpu_bfloat16_bits_equal_numpy():
    cp = _cupy()
    v = rounding_cases(4).view(np.float32)
    bits = bfloat16_bits(cp.asarray(v))
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(cp.asnumpy(bits), bfloat16_bits(v))
    # diagonals whose reciprocals are normal (the GPU's float32 division flushes a
    # subnormal quotient to zero, NumPy keeps it; a stiffness of 1e38 is no diagonal)
    v = v[v < np.float32(2.0**126)]
    inv = InverseDiagonal.of(cp.asarray(v), np.float32)
    assert inv.packed
    np.testing.assert_array_equal(cp.asnumpy(inv.values()),
                                  InverseDiagonal.of(v.copy(), np.float32).values())


@pytest.mark.gpu
@pytest.mark.parametrize("c1", [0.0, 0.37], ids=["c1_zero", "c1"])
@pytest.mark.parametrize("storage", ["float64", "float32", "bfloat16"])
def test_gpu_smooth_step_and_times_equal_numpy_bit_for_bit(storage, c1):
    """The kernels round each product and sum as the twin does (no FMA), so float64,
    float32 and float32 from bfloat16 bits all agree to the bit."""
    from femopt.solvers.smoothers import smooth_step

    cp = _cupy()
    rng = np.random.default_rng(5)
    n = 100_003
    real = np.float64 if storage == "float64" else np.float32
    diag = rng.uniform(0.1, 3.0, n).astype(real)
    inv = InverseDiagonal.of(diag, real, pack=storage == "bfloat16")
    assert inv.packed == (storage == "bfloat16")
    ginv = InverseDiagonal(cp.asarray(inv.data))
    x, d, r = (rng.standard_normal(n).astype(real) for _ in range(3))
    gx, gd, gr = (cp.asarray(a) for a in (x, d, r))
    smooth_step(gx, gd, gr, ginv, c1, 1.7)
    smooth_step_numpy(x, d, r, inv, c1, 1.7)
    np.testing.assert_array_equal(cp.asnumpy(gd), d)
    np.testing.assert_array_equal(cp.asnumpy(gx), x)
    want = inv.times(r)
    np.testing.assert_array_equal(cp.asnumpy(ginv.times(gr)), want)
    out = cp.empty_like(gr)
    assert ginv.times(gr, out=out) is out
    np.testing.assert_array_equal(cp.asnumpy(out), want)
    ginv.times(gr, out=gr)
    np.testing.assert_array_equal(cp.asnumpy(gr), want)


@pytest.mark.gpu
@pytest.mark.parametrize("coarse", ["galerkin", "hybrid"])
def test_gpu_float32_v_cycle_smooths_with_bfloat16(coarse):
    """One GPU's float32 V-cycle (level 1 by Galerkin products, or rediscretized) holds
    every level's D^-1 as bfloat16 and converges in the CPU twin's iterations, within
    two."""
    cp = _cupy()
    case, scale = cantilever((24, 12, 12))
    mg = MultigridSolver(MultigridOptions(rtol=1e-8, coarsest_size=100,
                                          coarse_operator=coarse), case.layout)
    mg.update_grid_operator(cp.asarray(scale), case.ke, case.fixed)
    mg.solve_grid(cp.asarray(case.load))
    assert mg.dtype == np.float32
    for lev in mg.levels[:-1]:
        inv = lev.smoother.inv_diag
        assert inv.packed and inv.nbytes == 2 * lev.layout.n_dofs
    twin = solved(case, scale, precision="float32", coarse_operator=coarse)
    assert abs(mg.last.iterations - twin.last.iterations) <= 2, (
        mg.last.iterations, twin.last.iterations)


def _lanczos_four_vectors(op, inv, free, iterations, seed=0):
    """The estimate the way it was taken with z = D~^-1 r held (a reference)."""
    from femopt.solvers.smoothers import lanczos_largest

    b = np.random.default_rng(seed).standard_normal(inv.size).astype(inv.dtype) * free
    r = b.astype(np.float64)
    z = inv.values().astype(np.float64) * r
    p = z.copy()
    rz = r @ z
    alphas, betas = [], []
    for _ in range(iterations):
        q = op.apply(p.astype(inv.dtype)).astype(np.float64)
        alpha = rz / (p @ q)
        r -= alpha * q
        z = inv.values().astype(np.float64) * r
        beta = (r @ z) / rz
        alphas.append(alpha)
        betas.append(beta)
        rz = r @ z
        p = z + beta * p
    return lanczos_largest(alphas, betas)


def test_lanczos_on_three_vectors_matches_the_four_vector_form():
    """The estimate with z formed where it is used (r, p, q held) and float64 sums is the
    four-vector CG-Lanczos' in float64 to float32 rounding; it uses the level's two work
    vectors for r and p."""
    case, scale = cantilever((24, 12, 12))
    mg = solved(case, scale, precision="float32")
    lev = mg.levels[0]
    inv = lev.smoother.inv_diag
    work = (np.zeros(inv.size, np.float32), np.zeros(inv.size, np.float32))
    est = estimate_lambda_max(lev.op, inv, lev.free, 20, work=work)
    ref = _lanczos_four_vectors(lev.op, inv, lev.free, 20)
    assert est == pytest.approx(ref, rel=1e-4)
    assert np.any(work[0] != 0) and np.any(work[1] != 0)  # r and p lived there


@pytest.mark.gpu
@pytest.mark.parametrize("storage", ["float64", "float32", "bfloat16"])
def test_gpu_lanczos_updates_equal_numpy(storage):
    """r - (alpha q) with r.(D~^-1 r), and (p beta) + D~^-1 r: the vectors to the bit,
    the float64 sum to rounding; and one level's estimate as the CPU twin's."""
    from femopt.solvers.smoothers import _lanczos_p, _lanczos_r

    cp = _cupy()
    rng = np.random.default_rng(6)
    n = 100_003
    real = np.float64 if storage == "float64" else np.float32
    inv = InverseDiagonal.of(rng.uniform(0.1, 3.0, n).astype(real), real,
                             pack=storage == "bfloat16")
    ginv = InverseDiagonal(cp.asarray(inv.data))
    r, q, p = (rng.standard_normal(n).astype(real) for _ in range(3))
    gr, gq, gp = (cp.asarray(a) for a in (r, q, p))
    s_gpu = _lanczos_r(gr, gq, ginv, 0.3141592653589793)
    s_cpu = _lanczos_r(r, q, inv, 0.3141592653589793)
    np.testing.assert_array_equal(cp.asnumpy(gr), r)
    assert s_gpu == pytest.approx(s_cpu, rel=1e-12)
    _lanczos_p(gp, gr, ginv, 0.61)
    _lanczos_p(p, r, inv, 0.61)
    np.testing.assert_array_equal(cp.asnumpy(gp), p)
    case, scale = cantilever((24, 12, 12))
    mg = MultigridSolver(MultigridOptions(rtol=1e-8, coarsest_size=100), case.layout)
    mg.update_grid_operator(cp.asarray(scale), case.ke, case.fixed)
    lev = mg.levels[0]
    twin = solved(case, scale, precision="float32").levels[0]
    est = estimate_lambda_max(lev.op, lev.smoother.inv_diag, lev.free, 20)
    # the random start differs (CuPy's generator): the estimates agree as estimates do
    assert est == pytest.approx(estimate_lambda_max(twin.op, twin.smoother.inv_diag,
                                                    twin.free, 20), rel=0.02)


def _fused_case(real):
    """A float32 or float64 level of the cantilever (a SIMP truss design) with its
    inverse diagonal as the smoothers keep it, a right-hand side and a start."""
    from femopt.assembly.matrix_free import StructuredOperator

    case, scale = cantilever((12, 6, 6))
    free = ~case.fixed
    op = StructuredOperator(case.layout, scale.astype(real), case.ke, free)
    inv = InverseDiagonal.of(op.diagonal(), np.dtype(real))
    rng = np.random.default_rng(8)
    b = (rng.standard_normal(case.layout.n_dofs) * free).astype(real)
    x = (rng.standard_normal(case.layout.n_dofs) * free).astype(real)
    return op, inv, b, x


@pytest.mark.parametrize("kind", ["chebyshev", "jacobi"])
@pytest.mark.parametrize("zero_start", [True, False])
def test_fused_steps_are_the_smoothers_polynomial(kind, zero_start):
    """run_fused (each step's residual formed in the apply: no residual vector) moves x
    as run (the residual updated) does, in float64 to rounding; and the operator's fused
    step is d <- c1 d + D~^-1 (c2 (b - A x)), d not read where c1 is 0."""
    op, inv, b, x0 = _fused_case(np.float64)
    if zero_start:
        x0[...] = 0.0
    sm = PolynomialSmoother(op, inv, kind, 3, 0.6, 2.5, 0.1, 1.1)
    # a zero start does not read x: NaN there must not reach the result
    x = np.full_like(x0, np.nan) if zero_start else x0.copy()
    d = np.zeros_like(x0)
    sm.run_fused(x, b, d, zero_start)
    ref, r = x0.copy(), b - op.apply(x0)
    sm.run(ref, r, np.zeros_like(x0), want_residual=False)
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert np.abs(x - x0).max() > 1e-3 * np.abs(ref).max()  # it smoothed
    d = np.full_like(x0, np.nan)
    op.smooth(x0, b, d, inv, 0.0, 0.7)
    np.testing.assert_allclose(d, inv.values() * (0.7 * (b - op.apply(x0))), rtol=1e-12,
                               atol=1e-14)
    d0 = np.random.default_rng(9).standard_normal(x0.size)
    d = d0.copy()
    op.smooth(x0, b, d, inv, 0.3, 0.7)
    np.testing.assert_allclose(d, 0.3 * d0 + inv.values() * (0.7 * (b - op.apply(x0))),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["walsh", "columns", "gather"])
@pytest.mark.parametrize("real", [np.float32, np.float64], ids=["f32", "f64"])
def test_gpu_fused_step_equals_numpy(variant, real, monkeypatch):
    """Every apply kernel's fused smoothing step (float32 with the bfloat16 D~^-1, or
    float64) against the NumPy twin, with c1 zero (d not read: NaN there) and not."""
    import femopt.assembly.matrix_free as mf

    cp = _cupy()
    monkeypatch.setattr(mf, "HEX8_VARIANT", variant)
    op, inv, b, x = _fused_case(real)
    gop = mf.StructuredOperator(op.layout, cp.asarray(op.scale), op.ke, cp.asarray(op.free))
    ginv = InverseDiagonal(cp.asarray(inv.data))
    assert gop._gpu.variant == variant and ginv.packed == (real == np.float32)
    tol = 1e-5 if real == np.float32 else 1e-12
    for c1, d0 in ((0.0, np.full_like(x, np.nan)), (0.3, np.linspace(-1, 1, x.size))):
        d = d0.astype(real)
        gd = cp.asarray(d)
        op.smooth(x, b, d, inv, c1, 0.7)
        gop.smooth(cp.asarray(x), cp.asarray(b), gd, ginv, c1, 0.7)
        np.testing.assert_allclose(cp.asnumpy(gd), d, rtol=0, atol=tol * np.abs(d).max())


def test_a_smoother_takes_at_least_one_step():
    op, inv, _, _ = _fused_case(np.float64)
    with pytest.raises(ValueError, match="at least one step"):
        PolynomialSmoother(op, inv, "chebyshev", 0)
