"""OC, MMA and nlopt on small problems with known optima, through a fake DesignProblem."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.backend import array_namespace, gpu_status, to_host
from femopt.errors import InputError
from femopt.optimizers.base import Evaluation
from femopt.optimizers.mma import mma_approximation, mma_step
from femopt.optimizers.mma_optimizer import MMA
from femopt.optimizers.nlopt_optimizer import NloptOptimizer
from femopt.optimizers.oc import OC
from femopt.plugins.registry import Registry


class FakeProblem:
    """A DesignProblem from plain functions: ``fun(x) -> (f, df, g, dg)``.

    Counts evaluations, records reports, and can ask for ``stages`` continuation steps
    (each multiplies the objective by ``stage_scale``) and stop at ``stop_at``.
    """

    def __init__(self, fun, n, m, xmin, xmax, cheap=None, stages=0, stage_scale=1.0,
                 stop_at=None, xp=np):
        self.fun = fun
        self.n, self.m = n, m
        self.xmin = xp.full(n, float(xmin))
        self.xmax = xp.full(n, float(xmax))
        self.cheap = cheap
        self.stages_left = stages
        self.stage_scale = stage_scale
        self.scale = 1.0
        self.stop_at = stop_at
        self.evaluated: list[tuple[float, ...]] = []
        self.reports: list[tuple[int, float]] = []
        self.continuation_calls = 0

    def evaluate(self, x):
        self.evaluated.append(tuple(to_host(x).astype(float)))
        f, df, g, dg = self.fun(x)
        return Evaluation(self.scale * f, self.scale * df, g, dg)

    def cheap_constraints(self, x):
        return None if self.cheap is None else self.cheap(x)

    def advance_continuation(self, iteration, change):
        self.continuation_calls += 1
        if self.stages_left and change < 0.05:
            self.stages_left -= 1
            self.scale *= self.stage_scale
            return True
        return False

    def report(self, iteration, x, ev, change):
        self.reports.append((iteration, change))
        return self.stop_at is not None and iteration >= self.stop_at


# min sum(c_i / x_i)  s.t.  sum(x) <= V: the optimum is x_i = V sqrt(c_i) / sum(sqrt(c))
SQRT_C = np.linspace(1.0, 4.0, 8)
VOLUME = 3.0
X_SEPARABLE = VOLUME * SQRT_C / SQRT_C.sum()
F_SEPARABLE = SQRT_C.sum() ** 2 / VOLUME


def volume_constraint(x):
    return (x.sum() / VOLUME - 1.0).reshape(1)


def separable(x):
    xp = array_namespace(x)
    c = xp.asarray(SQRT_C**2)
    return (float(xp.sum(c / x)), -c / x**2, volume_constraint(x),
            xp.full((1, x.size), 1.0 / VOLUME))


def separable_problem(**kw):
    return FakeProblem(separable, 8, 1, 0.01, 1.0, cheap=volume_constraint, **kw)


# Svanberg's cantilever: min 0.0624 sum(x)  s.t.  sum(c_i / x_i^3) <= 1
C_BEAM = np.array([61.0, 37.0, 19.0, 7.0, 1.0])
X_BEAM = np.array([6.016, 5.309, 4.494, 3.502, 2.153])
F_BEAM = 1.340


def beam(x):
    g = np.array([np.sum(C_BEAM / x**3) - 1.0])
    return 0.0624 * float(x.sum()), np.full(x.size, 0.0624), g, (-3.0 * C_BEAM / x**4)[None]


def beam_problem(**kw):
    return FakeProblem(beam, 5, 1, 1.0, 10.0, **kw)


def two_constraints(x):
    g = np.array([x.sum() - 1.0, x[0] - 0.5])
    return float(x @ x), 2 * x, g, np.stack([np.ones_like(x), np.eye(x.size)[0]])


OPTIMIZERS = {
    "oc": lambda **kw: OC(OC.Options(**kw)),
    "mma": lambda **kw: MMA(MMA.Options(**kw)),
    "nlopt-mma": lambda **kw: NloptOptimizer(NloptOptimizer.Options(algorithm="LD_MMA", **kw)),
    "nlopt-ccsaq": lambda **kw: NloptOptimizer(
        NloptOptimizer.Options(algorithm="LD_CCSAQ", **kw)),
    "nlopt-slsqp": lambda **kw: NloptOptimizer(
        NloptOptimizer.Options(algorithm="LD_SLSQP", **kw)),
}
GENERAL = [k for k in OPTIMIZERS if k != "oc"]
NLOPT = [k for k in OPTIMIZERS if k.startswith("nlopt")]


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_separable_volume_problem_reaches_sqrt_c_optimum(which):
    problem = separable_problem()
    result = OPTIMIZERS[which](tol=1e-4).run(problem, np.full(8, 0.3), 200)
    assert result.converged, result.message
    assert np.max(np.abs(result.x / X_SEPARABLE - 1.0)) < 5e-3
    f = separable(result.x)[0]
    # OC's multiplier is only as exact as its bisection (relative width 1e-3)
    assert abs(f / F_SEPARABLE - 1.0) < (1e-3 if which == "oc" else 1e-4)
    assert result.x.sum() <= VOLUME * (1 + 1e-3)
    assert result.iterations < 60


@pytest.mark.parametrize("which", GENERAL)
def test_svanberg_cantilever_beam(which):
    problem = beam_problem()
    result = OPTIMIZERS[which](tol=1e-4).run(problem, np.full(5, 5.0), 200)
    assert result.converged, result.message
    f, _, g, _ = beam(result.x)
    assert f == pytest.approx(F_BEAM, abs=1e-3)
    assert np.max(np.abs(result.x - X_BEAM)) < 0.01
    assert g[0] < 1e-4
    assert result.iterations < 100


@pytest.mark.parametrize("which", NLOPT)
def test_nlopt_evaluates_each_design_once(which):
    problem = beam_problem()
    result = OPTIMIZERS[which](tol=1e-4).run(problem, np.full(5, 5.0), 200)
    assert len(problem.evaluated) == len(set(problem.evaluated))
    assert len(problem.reports) == len(problem.evaluated) == result.iterations
    assert [r[0] for r in problem.reports] == list(range(1, result.iterations + 1))


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_iteration_limit_is_exact(which):
    problem = separable_problem()
    result = OPTIMIZERS[which](tol=1e-12).run(problem, np.full(8, 0.02), 3)
    assert not result.converged
    assert result.iterations == 3
    assert len(problem.evaluated) == 3
    assert "iteration limit 3" in result.message


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_report_can_stop_the_run(which):
    problem = separable_problem(stop_at=3)
    result = OPTIMIZERS[which](tol=1e-12).run(problem, np.full(8, 0.3), 50)
    assert (result.iterations, result.converged, result.message) == (3, False, "stopped")
    assert len(problem.reports) == 3


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_continuation_restarts_and_still_converges(which):
    problem = separable_problem(stages=2, stage_scale=2.0)
    result = OPTIMIZERS[which](tol=1e-4).run(problem, np.full(8, 0.3), 300)
    assert result.converged, result.message
    assert problem.scale == 4.0
    assert problem.stages_left == 0
    # scaling the objective moves no optimum
    assert np.max(np.abs(result.x / X_SEPARABLE - 1.0)) < 5e-3
    if which.startswith("nlopt"):
        # a changed problem is evaluated again even at a design seen before
        assert len(problem.evaluated) == result.iterations
        assert problem.continuation_calls == 3


@pytest.mark.parametrize("cheap", [True, False])
def test_oc_needs_one_cheap_constraint(cheap):
    if cheap:
        problem = FakeProblem(two_constraints, 3, 2, 0.0, 1.0,
                              cheap=lambda x: two_constraints(x)[2])
    else:
        problem = FakeProblem(separable, 8, 1, 0.01, 1.0, cheap=None)
    with pytest.raises(InputError, match="needs exactly one constraint that needs no solve"):
        OC(OC.Options()).run(problem, np.full(problem.n, 0.3), 10)
    assert problem.evaluated == []


@pytest.mark.parametrize("which", ["mma", "nlopt-mma", "nlopt-slsqp"])
def test_two_constraints(which):
    # min |x|^2 s.t. sum(x) <= 1, x0 <= 0.5 on [0.2, 1]^3: optimum x = 0.2 everywhere
    problem = FakeProblem(two_constraints, 3, 2, 0.2, 1.0)
    result = OPTIMIZERS[which](tol=1e-5).run(problem, np.array([0.9, 0.3, 0.3]), 100)
    assert np.allclose(result.x, 0.2, atol=1e-4)


def test_nlopt_unconstrained_algorithm_refuses_constraints():
    opt = NloptOptimizer(NloptOptimizer.Options(algorithm="LD_LBFGS"))
    with pytest.raises(InputError, match="LD_LBFGS handles bounds only"):
        opt.run(beam_problem(), np.full(5, 5.0), 10)


def test_nlopt_lbfgs_bound_constrained():
    # min sum((x - t)^2) with t partly outside [0, 1]: the optimum is t clipped
    t = np.array([-0.5, 0.25, 0.75, 1.5])
    problem = FakeProblem(lambda x: (float(np.sum((x - t) ** 2)), 2 * (x - t),
                                     np.zeros(0), np.zeros((0, 4))), 4, 0, 0.0, 1.0)
    opt = NloptOptimizer(NloptOptimizer.Options(algorithm="LD_LBFGS", tol=1e-6))
    result = opt.run(problem, np.full(4, 0.5), 100)
    assert np.allclose(result.x, np.clip(t, 0, 1), atol=1e-5)


def test_problem_errors_propagate_from_nlopt_callbacks():
    def broken(x):
        raise ZeroDivisionError("bad design")

    problem = FakeProblem(broken, 5, 1, 1.0, 10.0)
    with pytest.raises(ZeroDivisionError, match="bad design"):
        OPTIMIZERS["nlopt-mma"]().run(problem, np.full(5, 5.0), 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mma_step_keeps_namespace_and_dtype(dtype):
    x = np.full(5, 5.0, dtype=dtype)
    f, df, g, dg = beam(x.astype(float))
    step = mma_step(x, np.ones(5, dtype), np.full(5, 10.0, dtype), df.astype(dtype),
                    g.astype(dtype), dg.astype(dtype))
    reference = mma_step(x.astype(float), 1.0, 10.0, df, g, dg)
    for a in (step.x, step.low, step.upp):
        assert type(a) is np.ndarray and a.dtype == dtype and a.shape == (5,)
    assert np.allclose(step.x, reference.x, rtol=1e-5)
    # the first step is within asyinit/albefa/move of x, and moves toward feasibility
    assert np.all(step.x > x - 0.5 * 9.0 - 1e-6) and np.all(step.x < x + 0.5 * 9.0 + 1e-6)
    assert np.allclose(step.low, x - 4.5) and np.allclose(step.upp, x + 4.5)
    assert step.x.sum() < x.sum()  # lighter; the active constraint has a multiplier
    assert step.lam[0] > 0.1 and step.y[0] < 1e-6


def _cupy():
    ok, what = gpu_status()
    if not ok:
        pytest.skip(what)
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("which", ["oc", "mma", "nlopt-mma"])
def test_optimizers_keep_cupy_designs_on_the_device(which):
    cp = _cupy()
    problem = separable_problem(xp=cp)
    result = OPTIMIZERS[which](tol=1e-4).run(problem, cp.full(8, 0.3), 200)
    assert isinstance(result.x, cp.ndarray) and result.converged, result.message
    assert np.max(np.abs(result.x.get() / X_SEPARABLE - 1.0)) < 5e-3


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mma_step_on_cupy_matches_numpy(dtype):
    cp = _cupy()
    x = np.linspace(3.0, 7.0, 5)
    _, df, g, dg = beam(x)
    args = [a.astype(dtype) for a in (x, np.ones(5), np.full(5, 10.0), df, g, dg)]
    host = mma_step(*args)
    device = mma_step(*[cp.asarray(a) for a in args])
    for h, d in ((host.x, device.x), (host.low, device.low), (host.upp, device.upp)):
        assert isinstance(d, cp.ndarray) and d.dtype == dtype
        assert np.allclose(d.get(), h, rtol=1e-5)


def test_mma_subproblem_solution_satisfies_its_kkt_conditions():
    x = np.full(5, 5.0)
    f, df, g, dg = beam(x)
    xmin, xmax = np.ones(5), np.full(5, 10.0)
    step = mma_step(x, xmin, xmax, df, g, dg)
    alpha, beta, p0, q0, P, Q, b = mma_approximation(x, xmin, xmax, step.low, step.upp,
                                                     df, g, dg)
    ux, xl = step.upp - step.x, step.x - step.low
    g_approx = P @ (1 / ux) + Q @ (1 / xl) - b
    assert abs(g_approx[0]) < 1e-6  # active, since y = z = 0
    grad = (p0 + step.lam @ P) / ux**2 - (q0 + step.lam @ Q) / xl**2
    interior = (step.x > alpha + 1e-6) & (step.x < beta - 1e-6)
    assert interior.sum() >= 3
    assert np.max(np.abs(grad[interior])) < 1e-6


def test_mma_asymptotes_widen_on_steady_progress_and_narrow_on_oscillation():
    x0, x1, x2 = np.array([0.5, 0.5]), np.array([0.6, 0.6]), np.array([0.7, 0.5])
    first = mma_step(x0, 0.0, 1.0, np.array([1.0, 1.0]), np.zeros(0), np.zeros((0, 2)))
    step = mma_step(x2, 0.0, 1.0, np.array([1.0, 1.0]), np.zeros(0), np.zeros((0, 2)),
                    xold1=x1, xold2=x0, low=first.low, upp=first.upp)
    # variable 0 kept going up: its gap grows by 1.2; variable 1 turned back: by 0.7
    assert np.allclose(x2 - step.low, [1.2 * (0.6 - 0.0), 0.7 * (0.6 - 0.0)])
    assert np.allclose(step.upp - x2, [1.2 * (1.0 - 0.6), 0.7 * (1.0 - 0.6)])


def test_mma_reset_forgets_history():
    mma = MMA(MMA.Options())
    mma.run(beam_problem(), np.full(5, 5.0), 3)
    assert mma.xold1 is not None and mma.low is not None
    mma.reset(beam_problem(), np.full(5, 5.0))
    assert (mma.xold1, mma.xold2, mma.low, mma.upp) == (None, None, None, None)


def test_plugin_registers_the_three_optimizers():
    from femopt.optimizers import plugin

    registry = Registry()
    plugin.femopt_register_optimizers(registry=registry)
    assert registry.names("optimizer") == ["mma", "nlopt", "oc"]
    assert MMA.Options().move == 0.5 and OC.Options().move == 0.2
    assert NloptOptimizer.Options().algorithm == "LD_MMA"
    with pytest.raises(ValueError):
        MMA.Options(move=1.5)


def test_objective_stalled_needs_every_step_of_the_window_small():
    from femopt.optimizers.base import FTOL_WINDOW, objective_stalled

    flat = [10.0 * (1 - 1e-5) ** k for k in range(FTOL_WINDOW + 1)]
    assert objective_stalled(flat, 1e-4)
    assert not objective_stalled(flat[1:], 1e-4)  # too few iterations yet
    jump = flat[:2] + [flat[2] * 0.99] + flat[3:]
    assert not objective_stalled(jump, 1e-4)  # one step of 1% in the window


@pytest.mark.parametrize("which", ["mma"])  # OC solves this problem exactly in 3 steps
def test_ftol_stops_a_stalled_feasible_run_before_tol(which):
    """tol alone runs on (1e-12 is never reached); ftol ends the run once the objective
    has stalled with the volume met, near the optimum."""
    plain = OPTIMIZERS[which](tol=1e-12).run(separable_problem(), np.full(8, 0.3), 150)
    assert not plain.converged and plain.iterations == 150
    problem = separable_problem()
    result = OPTIMIZERS[which](tol=1e-12, ftol=1e-6).run(problem, np.full(8, 0.3), 150)
    assert result.converged and "ftol" in result.message, result.message
    assert result.iterations < 100
    assert abs(separable(result.x)[0] / F_SEPARABLE - 1.0) < 1e-3
    assert result.x.sum() <= VOLUME * (1 + 1e-3)


def test_ftol_waits_for_the_constraints():
    """An objective that has stalled with a violated constraint is not converged."""
    from femopt.optimizers.base import StepOptimizer

    class Frozen(StepOptimizer):  # jitters by 1e-6: the objective is flat from the start
        def update(self, problem, x, ev, iteration):
            return x + 1e-6 * (-1) ** iteration

    opts = MMA.Options(tol=1e-12, ftol=1e-3)
    infeasible = separable_problem()
    r = Frozen(opts).run(infeasible, np.full(8, 1.0), 20)  # sum 8 > volume 3
    assert not r.converged and r.iterations == 20
    r = Frozen(opts).run(separable_problem(), np.full(8, 0.3), 20)  # sum 2.4 < 3
    assert r.converged and r.iterations == 6


def test_a_stalled_objective_takes_every_pending_continuation_step_first():
    """With continuation steps pending, a stalled objective (ftol) steps the continuation
    instead of ending the run, as a small design change (tol) does: the run converges
    only after the last step (each step rescales the objective, so the stall restarts)."""
    from femopt.optimizers.base import FTOL_WINDOW, StepOptimizer

    class Frozen(StepOptimizer):  # the design never moves by more than 1e-6
        def update(self, problem, x, ev, iteration):
            return x + 1e-6 * (-1) ** iteration

    class Strict(FakeProblem):  # a step only on a change below 1e-9 (never here)
        def advance_continuation(self, iteration, change):
            return super().advance_continuation(iteration, change * 1e8)

    problem = Strict(separable, 8, 1, 0.01, 1.0, stages=3, stage_scale=2.0)
    r = Frozen(MMA.Options(tol=1e-12, ftol=1e-3)).run(problem, np.full(8, 0.3), 60)
    assert problem.stages_left == 0 and problem.scale == 8.0
    # each stage stalls after FTOL_WINDOW + 1 objectives, the last one then converges
    assert r.converged and "ftol" in r.message
    assert r.iterations == 4 * (FTOL_WINDOW + 1)


class _NoInitial(np.ndarray):
    """An array whose reductions refuse ``initial`` and an empty operand, as CuPy's do."""

    def max(self, *args, **kwargs):
        if "initial" in kwargs:
            raise TypeError("max() got an unexpected keyword argument 'initial'")
        if self.size == 0:
            raise ValueError("zero-size array to reduction operation maximum")
        return np.ndarray.max(self, *args, **kwargs)


class _RankSums:
    """LocalSums as a distributed run passes them (another object: the sized ratios are
    reduced over 'every rank', here one)."""

    rows, gram, combine = staticmethod(lambda A, v: A @ v), \
        staticmethod(lambda A, B: A @ B.T), staticmethod(lambda lam, A: lam @ A)

    @staticmethod
    def norm_max(pieces, sized):
        res = np.concatenate([np.asarray(p) for p in pieces])
        return float(np.linalg.norm(res)), float(np.abs(res).max())

    @staticmethod
    def max(value):
        return value


@pytest.mark.parametrize("n", [5, 0])
def test_mma_subproblem_with_rank_sums_uses_no_initial(n):
    """The distributed branch of the MMA step (a rank's sums) takes the largest step ratio
    without NumPy's ``max(initial=)``, which CuPy lacks, and skips a rank's empty part:
    the solution equals the local one (n = 5), and an empty design part solves (n = 0)."""
    from femopt.optimizers.mma import mma_subsolve

    xmin, xmax = np.ones(n), np.full(n, 10.0)
    if n:
        x = np.full(n, 5.0)
        _, df, g, dg = beam(x)
        step = mma_step(x, xmin, xmax, df, g, dg)
        low, upp = step.low, step.upp
    else:  # one constraint, met, on no design variable
        x, df, g, dg = np.zeros(0), np.zeros(0), np.array([-1.0]), np.zeros((1, 0))
        low, upp = np.zeros(0), np.zeros(0)
    alpha, beta, p0, q0, P, Q, b = mma_approximation(x, xmin, xmax, low, upp, df, g, dg)
    strict = [np.asarray(a).view(_NoInitial) for a in (low, upp, alpha, beta, p0, q0, P, Q)]
    got = mma_subsolve(*strict, np.asarray(b).view(_NoInitial), sums=_RankSums)
    assert np.asarray(got[0]).shape == (n,)
    if n == 0:  # a rank without design variables: the scalars' subproblem alone
        assert all(np.isfinite(np.asarray(a)).all() for a in got)
        return
    ref = mma_subsolve(low, upp, alpha, beta, p0, q0, P, Q, b)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(np.asarray(a), r, rtol=1e-12, atol=1e-14)
