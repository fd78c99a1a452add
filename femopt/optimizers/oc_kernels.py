"""The optimality-criteria update with a linear constraint, fused for the GPU.

With one linear constraint w . x <= limit (a volume fraction; a density filter keeps it
linear: sum_i (H x)_i / Hs_i / n = (H^T (1 / (n Hs))) . x), every bisection trial is one
pass over the design (``femopt_optimizers_oc_update`` in ``oc_kernels.cu``) that also
returns w . x_new and max |x_new - x|; nothing else crosses to the host. The update is the
88-line code's (Andreassen et al., 2011) as :func:`oc_update_linear_numpy` writes it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend import array_namespace, to_host
from femopt.optimizers.base import max_change

SOURCE = Path(__file__).with_suffix(".cu")
FLOOR = 1e-30
CEIL = 1e30
MAX_BISECTIONS = 256
# bisection steps that one reduction decides in a distributed run on GPUs: 15 trials a
# round, 10 or so rounds an update instead of 40 sums (on the host, or on one rank, a
# trial costs more than the sum it saves: one step a round there)
ROUND_DEPTH = 4
# bisection steps decided by one pass over the design on one GPU: the volumes of the 15
# multipliers the next 4 steps may try (the kernel's FEMOPT_OC_CANDIDATES), 10 or 11
# passes an update instead of about 40. 31 a pass held 230 registers a thread (one block
# of 256 per multiprocessor) and twice the float64 work per cell; the two depths were not
# timed apart (docs/benchmarks.md: OC took 22 ms a design iteration at 31)
CANDIDATE_DEPTH = 4


def oc_trial_numpy(x: np.ndarray, df: np.ndarray, dg: np.ndarray, xmin: Any, xmax: Any,
                   w: np.ndarray, lmid: float, move: float, eta: float
                   ) -> tuple[np.ndarray, float, float]:
    """NumPy twin of one trial: (x_new, w . x_new, max |x_new - x|)."""
    safe_dg = np.where(np.abs(dg) > FLOOR, dg, FLOOR)
    ratio = np.maximum(-df / safe_dg, FLOOR)
    factor = np.minimum(ratio / lmid, CEIL) ** eta
    lower = np.maximum(x - move, 0.0 if xmin is None else xmin)
    upper = np.minimum(x + move, 1.0 if xmax is None else xmax)
    x_new = np.clip(x * factor, lower, upper).astype(x.dtype)
    return x_new, float(np.dot(w, x_new)), float(np.max(np.abs(x_new - x), initial=0.0))


def oc_trial(x: Any, df: Any, dg: Any, xmin: Any, xmax: Any, w: Any, lmid: float,
             move: float, eta: float) -> tuple[Any, float, float]:
    """One OC trial at multiplier ``lmid``: (x_new, w . x_new, max |x_new - x|).
    ``xmin``, ``xmax`` and ``w`` may be constants (a number or a view at stride 0;
    None: the bounds 0 and 1)."""
    if array_namespace(x) is np:
        return oc_trial_numpy(x, df, dg, xmin, xmax, w, lmid, move, eta)
    return _kernel_trial(x, df, dg, _kernel_operands(x, xmin, xmax, w), lmid, move, eta)


def _kernel_trial(x: Any, df: Any, dg: Any, operands: tuple, lmid: float, move: float,
                  eta: float, x_new: Any = None) -> tuple[Any, float, float]:
    """:func:`oc_trial` on the GPU with the bounds and w as
    :func:`_kernel_operands` gives them; the trial design written into ``x_new``
    (None: a new array)."""
    x_new, out = _kernel_launch(x, df, dg, operands, lmid, move, eta, x_new)
    sums = out.get()
    return x_new, float(sums[0]), float(sums[1])  # out[1] holds a double's bits


def _kernel_launch(x: Any, df: Any, dg: Any, operands: tuple, lmid: float, move: float,
                   eta: float, x_new: Any = None) -> tuple[Any, Any]:
    """:func:`_kernel_trial`'s kernel, its sums left on the device: (x_new, out)."""
    import cupy

    from femopt.backend.kernels import get_kernel, real_name, reduction_grid, register_instances

    register_instances(SOURCE, [f"femopt_optimizers_oc_update<{r}>" for r in ("double", "float")])
    kern = get_kernel(SOURCE, f"femopt_optimizers_oc_update<{real_name(x)}>")
    (xmin, xmin_value), (xmax, xmax_value), (w, w_value) = operands
    x_new = cupy.empty_like(x) if x_new is None else x_new
    out = cupy.zeros(2, dtype=cupy.float64)
    kern((reduction_grid(x.size),), (256,),
         (x, df, dg, xmin, xmax, w, x_new, xmin_value, xmax_value, w_value,
          np.float64(lmid), np.float64(move), np.float64(eta), out, np.int64(x.size)))
    return x_new, out


def oc_update_linear(x: Any, df: Any, dg: Any, w: Any, limit: float, xmin: Any = None,
                     xmax: Any = None, move: float = 0.2, eta: float = 0.5,
                     bisection_tol: float = 1e-3, reductions: Any = None,
                     round_depth: int | None = None, candidates: bool = True
                     ) -> tuple[Any, float]:
    """OC update under w . x <= limit; bisection on the multiplier as in the 88-line
    code. Returns the new design and max |x_new - x|. ``reductions`` (a distributed
    run's: ``layer_sums``, ``add_up`` and ``max`` over every rank's part of the design)
    replace the local sums, ``round_depth`` bisection steps decided by each of their
    reductions (None: :data:`ROUND_DEPTH` on GPUs of several ranks, else 1;
    :func:`_update_by_rounds`). On one GPU (no ``reductions``), ``candidates``: each pass
    over the design sums the volumes of the next :data:`CANDIDATE_DEPTH` steps'
    multipliers (:func:`_update_by_candidates`); False: one trial a step."""
    host = _HostTrials(x, df, dg, xmin, xmax, w, move, eta) \
        if array_namespace(x) is np else None
    operands = None if host is not None else _kernel_operands(x, xmin, xmax, w)
    if reductions is not None:
        # several steps a round where a reduction costs more than the trials it saves:
        # between ranks on GPUs (one rank's sums are its own)
        depth = round_depth if round_depth is not None else (
            ROUND_DEPTH if host is None and getattr(reductions, "distributed", True) else 1)
        if depth < 1:
            raise ValueError(f"OC's bisection: round_depth must be at least 1, got {depth}")
        return _update_by_rounds(x, df, dg, w, limit, host, operands, move, eta,
                                 bisection_tol, reductions, depth)
    if host is None and candidates:
        return _update_by_candidates(x, df, dg, limit, operands, move, eta, bisection_tol)
    l1, l2 = 0.0, 1e9
    x_new, change = x, 0.0
    for _ in range(MAX_BISECTIONS):
        if (l2 - l1) / (l1 + l2) <= bisection_tol:
            break
        lmid = 0.5 * (l1 + l2)
        if host is not None:  # the change only once, for the last trial
            x_new, vol = host(lmid)
        else:  # every trial into one array: the last one is the new design
            x_new, vol, change = _kernel_trial(x, df, dg, operands, lmid, move, eta,
                                               None if x_new is x else x_new)
        if vol > limit:
            l1 = lmid
        else:
            l2 = lmid
    if host is not None and x_new is not x:
        change = max_change(x_new, x)
    return x_new, change


def bisection_tree(l1: float, l2: float, depth: int, tol: float
                   ) -> tuple[list[float], dict[tuple[int, ...], int]]:
    """The multipliers that the next ``depth`` steps of the bisection from (l1, l2) may
    try, as its loop computes them: (the multipliers, path -> index), a path being the
    steps' outcomes from (l1, l2) (1: the volume was above the limit, l1 moved up). An
    interval that meets ``tol`` is not split (the loop stops there)."""
    mids: list[float] = []
    index: dict[tuple[int, ...], int] = {}
    frontier: list[tuple[tuple[int, ...], float, float]] = [((), l1, l2)]
    for _ in range(depth):
        deeper = []
        for path, a, b in frontier:
            if (b - a) / (a + b) <= tol:
                continue
            mid = 0.5 * (a + b)
            index[path] = len(mids)
            mids.append(mid)
            deeper += [(path + (1,), mid, b), (path + (0,), a, mid)]
        frontier = deeper
    return mids, index


def _walk(l1: float, l2: float, mids: list[float], index: dict, volumes: Any,
          limit: float) -> tuple[float, float, float | None, int]:
    """The bisection's steps through one :func:`bisection_tree` whose multipliers'
    volumes are known: (l1, l2, the last multiplier tried or None, the steps taken)."""
    path: tuple[int, ...] = ()
    last, steps = None, 0
    while path in index:
        i = index[path]
        last, steps = mids[i], steps + 1
        if float(volumes[i]) > limit:
            l1, path = mids[i], path + (1,)
        else:
            l2, path = mids[i], path + (0,)
    return l1, l2, last, steps


def _update_by_candidates(x: Any, df: Any, dg: Any, limit: float, operands: tuple,
                          move: float, eta: float, tol: float) -> tuple[Any, float]:
    """:func:`oc_update_linear` on one GPU: one pass over the design sums the volumes at
    every multiplier the next :data:`CANDIDATE_DEPTH` bisection steps may try
    (``femopt_optimizers_oc_volumes``), the steps are walked on the host, and the last
    multiplier's trial writes the new design. The multipliers are the one-step loop's
    while no volume lies that close to the limit: the kernel rounds the update's factor
    apart (a few ulps of a float64 volume; about 1e-7 of it for a float32 design)."""
    l1, l2 = 0.0, 1e9
    steps, last = 0, None
    while steps < MAX_BISECTIONS and (l2 - l1) / (l1 + l2) > tol:
        mids, index = bisection_tree(l1, l2, min(CANDIDATE_DEPTH, MAX_BISECTIONS - steps),
                                     tol)
        volumes = _kernel_volumes(x, df, dg, operands, mids, move, eta)
        l1, l2, walked, taken = _walk(l1, l2, mids, index, volumes, limit)
        last, steps = walked, steps + taken
    if last is None:
        return x, 0.0
    x_new, _, change = _kernel_trial(x, df, dg, operands, last, move, eta)
    return x_new, change


def _kernel_volumes(x: Any, df: Any, dg: Any, operands: tuple, mids: list[float],
                    move: float, eta: float) -> np.ndarray:
    """w . x_new at each multiplier of ``mids`` (at most 2^CANDIDATE_DEPTH - 1), from
    one kernel pass."""
    import cupy

    from femopt.backend.kernels import get_kernel, real_name, reduction_grid, register_instances

    n_k = 2**CANDIDATE_DEPTH - 1
    if not 1 <= len(mids) <= n_k:
        raise ValueError(f"OC's volumes: 1 to {n_k} multipliers at once, got {len(mids)}")
    register_instances(SOURCE, [f"femopt_optimizers_oc_volumes<{r}>"
                                for r in ("double", "float")])
    kern = get_kernel(SOURCE, f"femopt_optimizers_oc_volumes<{real_name(x)}>")
    (xmin, xmin_value), (xmax, xmax_value), (w, w_value) = operands
    # the kernel always sums n_k: the unused ones repeat the last multiplier
    padded = np.array(list(mids) + [mids[-1]] * (n_k - len(mids)), dtype=np.float64)
    scales = cupy.asarray(padded ** -eta)
    out = cupy.zeros(n_k, dtype=cupy.float64)
    kern((reduction_grid(x.size),), (256,),
         (x, df, dg, xmin, xmax, w, xmin_value, xmax_value, w_value, scales,
          np.float64(move), np.float64(eta), np.int32(eta == 0.5),
          np.float64(CEIL ** eta), out, np.int64(x.size)))
    return out.get()[:len(mids)]


def _update_by_rounds(x: Any, df: Any, dg: Any, w: Any, limit: float, host: Any,
                      operands: Any, move: float, eta: float, tol: float, reductions: Any,
                      depth: int) -> tuple[Any, float]:
    """:func:`oc_update_linear` over a distributed design: each round tries every
    multiplier of the next ``depth`` bisection steps (:func:`bisection_tree`) and sums
    their volumes by one reduction, then walks the steps. The multipliers, volumes and
    the new design are the one-step loop's, bit for bit (the same trials, each volume
    ``reductions.dot``'s per-layer sums); ``depth`` 1 is that loop."""
    def trial(lmid):
        if host is not None:
            return host(lmid)[0]
        return _kernel_launch(x, df, dg, operands, lmid, move, eta)[0]

    l1, l2 = 0.0, 1e9
    steps, last, x_new = 0, None, x
    while steps < MAX_BISECTIONS and (l2 - l1) / (l1 + l2) > tol:
        mids, index = bisection_tree(l1, l2, min(depth, MAX_BISECTIONS - steps), tol)
        partials, kept = [], None
        for lmid in mids:
            x_c = trial(lmid)
            partials.append(reductions.layer_sums(w * x_c))
            kept = x_c if len(mids) == 1 else None  # one trial: it is the new design
        volumes = to_host(reductions.add_up(partials))
        l1, l2, last, taken = _walk(l1, l2, mids, index, volumes, limit)
        steps += taken
        x_new = kept
    if x_new is None:  # the last step's trial again (not kept: a round of several)
        x_new = trial(last)
    return x_new, reductions.max(max_change(x_new, x) if x_new is not x else 0.0)


def _kernel_operands(x: Any, xmin: Any, xmax: Any, w: Any) -> tuple:
    """The bounds and w as the OC kernel reads them: (array, 0) pairs, or for a constant
    (a number, a view at stride 0; a bound None: 0 and 1) (None, the number in the
    design's dtype): one number, no array of the design's size, each entry read as
    from an array of it."""
    return tuple(_kernel_operand(a, x, default)
                 for a, default in ((xmin, 0.0), (xmax, 1.0), (w, None)))


def _kernel_operand(a: Any, x: Any, default: float | None) -> tuple[Any, np.float64]:
    import cupy

    if a is None and default is not None:
        value = default
    elif np.ndim(a) == 0 or a.strides == (0,):
        value = float(a if np.ndim(a) == 0 else a[0])
    else:
        return cupy.ascontiguousarray(a, dtype=x.dtype), np.float64(0.0)
    return None, np.float64(np.asarray(value, dtype=x.dtype))


class _HostTrials:
    """:func:`oc_trial_numpy` with what does not depend on the multiplier (the ratio
    -df / dg and the move limits) computed once per update: each trial is then four
    passes over the design. The same arithmetic, so the same new design bit for bit."""

    def __init__(self, x: np.ndarray, df: np.ndarray, dg: np.ndarray, xmin: Any,
                 xmax: Any, w: np.ndarray, move: float, eta: float):
        safe_dg = np.where(np.abs(dg) > FLOOR, dg, FLOOR)
        self.ratio = np.maximum(-df / safe_dg, FLOOR)
        self.lower = np.maximum(x - move, 0.0 if xmin is None else xmin)
        self.upper = np.minimum(x + move, 1.0 if xmax is None else xmax)
        # a constant w (one number at stride 0) as the array BLAS's dot reads, once per
        # update (NumPy's dot would copy it for every trial)
        self.x, self.w, self.eta = x, np.ascontiguousarray(w), eta

    def __call__(self, lmid: float) -> tuple[np.ndarray, float]:
        factor = np.divide(self.ratio, lmid)
        np.minimum(factor, CEIL, out=factor)
        factor **= self.eta  # as ``**`` does (a square root for 0.5)
        x_new = np.multiply(self.x, factor, out=factor)
        np.clip(x_new, self.lower, self.upper, out=x_new)
        x_new = x_new.astype(self.x.dtype, copy=False)
        return x_new, float(np.dot(self.w, x_new))
