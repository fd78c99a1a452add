"""OC's bisection on the CPU path with a volume through a density filter: the constraint
is linear in x, so each bisection trial is a dot product with H^T (v / Hs), not a filter
pass; the run's iterations and objectives equal the filtered bisection's."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.runner import build_model
from test_amg import PROBLEM as AMG_PROBLEM

# the bracket of test_amg with a smaller radius, the direct solver and more iterations
PROBLEM = (AMG_PROBLEM.replace("radius: 6.0", "radius: 4.0")
           .replace("optimizer: {type: oc, max_iter: 3}",
                    "optimizer: {type: oc, max_iter: 8, tol: 1e-9}\nsolver: {type: direct}"))
ITERATIONS = 8


def _model(tmp_path, extra: str = ""):
    path = tmp_path / "bracket.yaml"
    path.write_text(PROBLEM + extra)
    return build_model(path, device="cpu")


def _counted(model, calls: list) -> None:
    """Count the density filter's forward passes."""
    f = model.filters[0]
    original = f.forward
    f.forward = lambda x: calls.append(1) or original(x)


def test_linear_constraint_equals_the_filtered_volume(tmp_path):
    model = _model(tmp_path)
    b = model.linear_constraint()[1]
    w = model.path.linear_weights()
    x = np.random.default_rng(4).uniform(0.0, 1.0, model.n)
    assert w @ x + b == pytest.approx(model.cheap_constraints(x)[0], rel=1e-12, abs=1e-14)


def test_run_equals_the_filtered_bisection_with_one_filter_pass_per_iteration(
        tmp_path, monkeypatch):
    fast, slow = _model(tmp_path), _model(tmp_path)
    monkeypatch.setattr(slow, "linear_constraint", lambda: None)
    fast_calls: list = []
    slow_calls: list = []
    _counted(fast, fast_calls)
    _counted(slow, slow_calls)
    fast.optimizer.run(fast, fast.x0.copy(), ITERATIONS)
    slow.optimizer.run(slow, slow.x0.copy(), ITERATIONS)
    assert len(fast.history) == len(slow.history) == ITERATIONS
    a = np.array([h.objective for h in fast.history])
    b = np.array([h.objective for h in slow.history])
    assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
    assert np.abs(fast.x - slow.x).max() <= 1e-12
    # one filter pass per design iteration (the evaluation) and one for OC's check of
    # the problem at the start, none per bisection trial
    assert len(fast_calls) == ITERATIONS + 1
    assert len(slow_calls) >= 10 * ITERATIONS


def test_no_linear_constraint_through_a_projection(tmp_path):
    path = tmp_path / "projected.yaml"
    path.write_text(PROBLEM.replace("  - {type: density, radius: 4.0}\n",
                                    "  - {type: density, radius: 4.0}\n"
                                    "  - {type: heaviside, beta: 2.0}\n"))
    model = build_model(path, device="cpu")
    assert len(model.filters) == 2
    assert model.linear_constraint() is None


@pytest.mark.parametrize("bounds", [False, True])
def test_host_bisection_equals_the_trial_loop_bit_for_bit(bounds):
    """The host update (ratio and move limits once per update, the change once at the
    end) gives the design and change of the plain loop over ``oc_trial_numpy``."""
    from femopt.optimizers import oc_kernels

    rng = np.random.default_rng(7)
    n = 5000
    x = rng.uniform(0.01, 1.0, n)
    df, dg, w = -rng.uniform(0.0, 1.0, n), rng.uniform(0.5, 1.0, n), rng.uniform(0, 1, n) / n
    df[:10] = 0.0  # a ratio at its floor
    xmin, xmax = (np.full(n, 0.001), np.where(rng.random(n) < 0.1, 0.5, 1.0)) if bounds \
        else (None, None)
    got, change = oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax)
    l1, l2, trials = 0.0, 1e9, 0
    while (l2 - l1) / (l1 + l2) > 1e-3:
        lmid = 0.5 * (l1 + l2)
        want, vol, want_change = oc_kernels.oc_trial_numpy(x, df, dg, xmin, xmax, w, lmid,
                                                            0.2, 0.5)
        l1, l2 = (lmid, l2) if vol > 0.3 else (l1, lmid)
        trials += 1
    assert trials > 20
    assert np.array_equal(got, want) and change == want_change


@pytest.mark.parametrize("limit", [0.4, 0.5, 0.6, 2.0])
def test_candidate_passes_take_the_trial_loops_multipliers(monkeypatch, limit):
    """One GPU's update by candidates (the volumes of the next four steps' 15
    multipliers from one pass, the steps walked on the host, the last multiplier's trial
    the design), with NumPy in place of its two kernels: the multipliers, design and
    change of the plain loop, in far fewer passes over the design."""
    from femopt.optimizers import oc_kernels

    rng = np.random.default_rng(11)
    n = 4000
    x = rng.uniform(0.01, 1.0, n)
    df, dg, w = -rng.uniform(0.0, 1.0, n) ** 3, rng.uniform(0.5, 1.0, n), np.full(n, 1.0 / n)
    passes: list[int] = []
    tried: list[float] = []

    def volumes(x_, df_, dg_, operands, mids, move, eta):
        assert 1 <= len(mids) <= 2**oc_kernels.CANDIDATE_DEPTH - 1
        passes.append(len(mids))
        return np.array([oc_kernels.oc_trial_numpy(x_, df_, dg_, None, None, w, m, move,
                                                   eta)[1] for m in mids])

    def trial(x_, df_, dg_, operands, lmid, move, eta):
        tried.append(lmid)
        return oc_kernels.oc_trial_numpy(x_, df_, dg_, None, None, w, lmid, move, eta)

    monkeypatch.setattr(oc_kernels, "_kernel_volumes", volumes)
    monkeypatch.setattr(oc_kernels, "_kernel_trial", trial)
    got, change = oc_kernels._update_by_candidates(x, df, dg, limit, None, 0.2, 0.5, 1e-3)
    l1, l2, mids = 0.0, 1e9, []
    # a limit out of reach (2.0: the volume never exceeds it) halves l2 until the cap
    while len(mids) < oc_kernels.MAX_BISECTIONS and (l2 - l1) / (l1 + l2) > 1e-3:
        mids.append(0.5 * (l1 + l2))
        want, vol, want_change = oc_kernels.oc_trial_numpy(x, df, dg, None, None, w,
                                                            mids[-1], 0.2, 0.5)
        l1, l2 = (mids[-1], l2) if vol > limit else (l1, mids[-1])
    assert tried == [mids[-1]]
    assert np.array_equal(got, want) and change == want_change
    assert len(passes) == -(-len(mids) // oc_kernels.CANDIDATE_DEPTH)  # ceil
    assert len(mids) > 25
