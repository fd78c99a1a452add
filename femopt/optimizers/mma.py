"""The Method of Moving Asymptotes (Svanberg 1987; "MMA and GCMMA", notes of 2007).

Around the current design x, MMA replaces the objective f_0 and each constraint f_i by a
convex, separable approximation between moving asymptotes l < x < u,

    f_i(x) ~ sum_j ( p_ij / (u_j - x_j) + q_ij / (x_j - l_j) ) + r_i,

and solves the subproblem

    min   f_0~(x) + a0 z + sum_i (c_i y_i + d_i y_i^2 / 2)
    s.t.  f_i~(x) - a_i z - y_i <= 0   (i = 1..m),
          alpha <= x <= beta,  y >= 0,  z >= 0,

whose artificial variables y, z keep it feasible when the true problem is not. With
a0 = 1, a_i = 0, d_i = 1 and c_i large, y = 0 at a feasible optimum and the subproblem is
the plain one. The subproblem is solved by a primal-dual interior-point Newton method
on its KKT conditions with the complementarity relaxed to ``epsilon`` (Svanberg's
"subsolv"); epsilon shrinks tenfold per stage. Eliminating the bound multipliers and the
diagonal blocks leaves one (m + 1) x (m + 1) system per Newton step, so the cost is linear
in n.

Everything here is vectorized over the design variables and takes its array module from
its inputs: the same code runs on NumPy and CuPy arrays. The subproblem is solved in
float64 whatever the design's dtype; the results come back in the design's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from femopt.backend import array_namespace

ALBEFA = 0.1  # how close (as a fraction of x - l) the subproblem bounds come to l and u
RAA0 = 1e-5  # regularization that keeps every approximation strictly convex
EPSIMIN = 1e-7  # last relaxation of the interior-point method


@dataclass
class MMAStep:
    """Result of one MMA step: the new design, the asymptotes used, and the
    subproblem's solution (artificial variables y, z and constraint multipliers lam)."""

    x: Any  # (n,)
    low: Any  # (n,)
    upp: Any  # (n,)
    y: Any  # (m,)
    z: float
    lam: Any  # (m,)


def moving_asymptotes(x, xmin, xmax, xold1=None, xold2=None, low=None, upp=None,
                      asyinit: float = 0.5, asyincr: float = 1.2, asydecr: float = 0.7):
    """Asymptotes (low, upp) for the step from ``x``.

    Without two earlier iterates (or earlier asymptotes) they lie ``asyinit`` of the bound
    range from x. Afterwards each variable's distance to its asymptotes grows by
    ``asyincr`` where it moved the same way twice (smooth progress), shrinks by
    ``asydecr`` where it oscillated, and stays where it did not move; the result is kept
    between 0.01 and 10 bound ranges from x.
    """
    xp = array_namespace(x)
    span = xmax - xmin
    if xold1 is None or xold2 is None or low is None or upp is None:
        return x - asyinit * span, x + asyinit * span
    trend = (x - xold1) * (xold1 - xold2)
    factor = 1.0 + (asyincr - 1.0) * (trend > 0) + (asydecr - 1.0) * (trend < 0)
    low = x - factor * (xold1 - low)
    upp = x + factor * (upp - xold1)
    low = xp.clip(low, x - 10.0 * span, x - 0.01 * span)
    upp = xp.clip(upp, x + 0.01 * span, x + 10.0 * span)
    return low, upp


def _convex_terms(grad, ux2, xl2, reg):
    """p, q of an approximation whose gradient at x is ``grad``: the positive part goes
    to the upper asymptote, the negative part to the lower, and both get ``0.001 |grad| +
    reg`` so that the approximation is strictly convex."""
    xp = array_namespace(grad)
    pos = xp.maximum(grad, 0.0)
    neg = xp.maximum(-grad, 0.0)
    extra = 0.001 * (pos + neg) + reg
    return (pos + extra) * ux2, (neg + extra) * xl2


class LocalSums:
    """Sums over the design variables when the whole design is here (the default); a
    distributed run passes its own (:class:`femopt.parallel.reductions.Reductions`), with the
    same methods, whose sums run over every rank's part."""

    @staticmethod
    def rows(A, v):
        """(m,) A @ v for A (m, n)."""
        return A @ v

    @staticmethod
    def gram(A, B):
        """(m, m) A @ B^T."""
        return A @ B.T

    @staticmethod
    def combine(lam, A):
        """(n,) lam @ A (no sum over the design)."""
        return lam @ A

    @staticmethod
    def norm_max(pieces, sized):
        """(2-norm, largest magnitude) of the pieces concatenated (``sized``: which are
        design-sized)."""
        xp = array_namespace(pieces[0])
        res = xp.concatenate(pieces)
        return float(xp.linalg.norm(res)), float(xp.max(xp.abs(res)))

    @staticmethod
    def max(value):
        return value


def mma_approximation(x, xmin, xmax, low, upp, df0, g, dg, move: float = 0.5,
                      sums=LocalSums):
    """Bounds and coefficients of the MMA subproblem at ``x``.

    Returns ``(alpha, beta, p0, q0, P, Q, b)``: the subproblem's variable bounds (within
    ``move`` of the bound range from x and a tenth of the way to each asymptote), the
    objective's p0, q0 (n,), the constraints' P, Q (m, n), and b (m,) such that the
    approximated constraints read ``P @ 1/(u - x) + Q @ 1/(x - l) - b <= 0``.
    """
    xp = array_namespace(x)
    span = xmax - xmin
    alpha = xp.maximum(xp.maximum(low + ALBEFA * (x - low), x - move * span), xmin)
    beta = xp.minimum(xp.minimum(upp - ALBEFA * (upp - x), x + move * span), xmax)
    reg = RAA0 / xp.maximum(span, 1e-5)
    ux1 = upp - x
    xl1 = x - low
    p0, q0 = _convex_terms(df0, ux1**2, xl1**2, reg)
    P, Q = _convex_terms(dg, ux1**2, xl1**2, reg)
    b = sums.rows(P, 1.0 / ux1) + sums.rows(Q, 1.0 / xl1) - g
    return alpha, beta, p0, q0, P, Q, b


@dataclass
class _Point:
    """A primal-dual point of the subproblem: x, y, z, the constraint multipliers lam,
    the bound multipliers xsi (x >= alpha), eta (x <= beta), mu (y >= 0), zet (z >= 0)
    and the slacks s of the constraints. z and zet are (1,) arrays so nothing leaves the
    device."""

    x: Any
    y: Any
    z: Any
    lam: Any
    xsi: Any
    eta: Any
    mu: Any
    zet: Any
    s: Any

    def moved(self, d: _Point, step: float) -> _Point:
        return _Point(*(v + step * dv for v, dv in zip(self.values(), d.values())))

    def values(self) -> tuple:
        return (self.x, self.y, self.z, self.lam, self.xsi, self.eta, self.mu, self.zet, self.s)


class _Subproblem:
    """The MMA subproblem's data and its relaxed KKT conditions."""

    def __init__(self, low, upp, alpha, beta, p0, q0, P, Q, b, a0, a, c, d, sums=LocalSums):
        self.sums = sums
        self.low, self.upp, self.alpha, self.beta = low, upp, alpha, beta
        self.p0, self.q0, self.P, self.Q, self.b = p0, q0, P, Q, b
        self.a0, self.a, self.c, self.d = a0, a, c, d

    SIZED = (True, False, False, False, True, True, False, False, False)

    def residual_norm(self, v: _Point, epsi: float) -> tuple[float, float]:
        """(2-norm, largest magnitude) of the relaxed KKT residual at ``v``."""
        return self.sums.norm_max(self.residual(v, epsi), self.SIZED)

    def residual(self, v: _Point, epsi: float):
        """The relaxed KKT residual at ``v``: its equations' pieces (the design-sized
        ones are :data:`SIZED`)."""
        ux1 = self.upp - v.x
        xl1 = v.x - self.low
        sums = self.sums
        plam = self.p0 + sums.combine(v.lam, self.P)
        qlam = self.q0 + sums.combine(v.lam, self.Q)
        gvec = sums.rows(self.P, 1.0 / ux1) + sums.rows(self.Q, 1.0 / xl1)
        return [
            plam / ux1**2 - qlam / xl1**2 - v.xsi + v.eta,
            self.c + self.d * v.y - v.mu - v.lam,
            self.a0 - v.zet - self.a @ v.lam,
            gvec - self.a * v.z - v.y + v.s - self.b,
            v.xsi * (v.x - self.alpha) - epsi,
            v.eta * (self.beta - v.x) - epsi,
            v.mu * v.y - epsi,
            v.zet * v.z - epsi,
            v.lam * v.s - epsi,
        ]

    def newton_direction(self, v: _Point, epsi: float) -> _Point:
        """Newton direction of the relaxed KKT system at ``v``.

        The complementarity equations give the bound multipliers' and slacks' steps in
        terms of dx, dy, dz, dlam; the stationarity in x and y gives dx and dy in terms of
        dlam (diagonal solves); what remains is the (m + 1) x (m + 1) system

            [ diag(s/lam + 1/Dy) + G Dx^-1 G^T   a      ] [dlam]   [ b_lam ]
            [ a^T                               -zet/z  ] [ dz ] = [ d_z   ]

        with G the constraints' approximated gradient (m, n).
        """
        xp = array_namespace(v.x)
        m = v.lam.shape[0]
        ux1 = self.upp - v.x
        xl1 = v.x - self.low
        ux2, xl2 = ux1**2, xl1**2
        xa = v.x - self.alpha
        bx = self.beta - v.x
        sums = self.sums
        plam = self.p0 + sums.combine(v.lam, self.P)
        qlam = self.q0 + sums.combine(v.lam, self.Q)
        gvec = sums.rows(self.P, 1.0 / ux1) + sums.rows(self.Q, 1.0 / xl1)
        G = self.P / ux2 - self.Q / xl2

        delx = plam / ux2 - qlam / xl2 - epsi / xa + epsi / bx
        dely = self.c + self.d * v.y - v.lam - epsi / v.y
        delz = self.a0 - self.a @ v.lam - epsi / v.z
        dellam = gvec - self.a * v.z - v.y - self.b + epsi / v.lam
        diagx = 2.0 * (plam / (ux2 * ux1) + qlam / (xl2 * xl1)) + v.xsi / xa + v.eta / bx
        diagy = self.d + v.mu / v.y
        Gd = G / diagx

        blam = dellam + dely / diagy - sums.rows(Gd, delx)
        alam = sums.gram(Gd, G) + xp.diag(v.s / v.lam + 1.0 / diagy)
        top = xp.concatenate((alam, self.a[:, None]), axis=1)
        bottom = xp.concatenate((self.a[None, :], (-v.zet / v.z)[None, :]), axis=1)
        sol = xp.linalg.solve(xp.concatenate((top, bottom), axis=0),
                              xp.concatenate((blam, delz)))
        dlam, dz = sol[:m], sol[m:]

        dx = -(delx + sums.combine(dlam, G)) / diagx
        dy = (dlam - dely) / diagy
        return _Point(
            x=dx,
            y=dy,
            z=dz,
            lam=dlam,
            xsi=-v.xsi + (epsi - v.xsi * dx) / xa,
            eta=-v.eta + (epsi + v.eta * dx) / bx,
            mu=-v.mu + (epsi - v.mu * dy) / v.y,
            zet=-v.zet + (epsi - v.zet * dz) / v.z,
            s=-v.s + (epsi - v.s * dlam) / v.lam,
        )

    def max_step(self, v: _Point, d: _Point) -> float:
        """Largest step (at most 1) that keeps the positive variables and the distances
        to alpha and beta above 1/101 of their values (the classic 1.01 margin)."""
        xp = array_namespace(v.x)
        positive = (v.y, v.z, v.lam, v.xsi, v.eta, v.mu, v.zet, v.s)
        directions = (d.y, d.z, d.lam, d.xsi, d.eta, d.mu, d.zet, d.s)
        ratios = [xp.max(-1.01 * dv / pv) for pv, dv in zip(positive, directions) if pv.size]
        if self.sums is LocalSums:
            ratios.append(xp.max(-1.01 * d.x / (v.x - self.alpha)))
            ratios.append(xp.max(1.01 * d.x / (self.beta - v.x)))
            worst = float(xp.max(xp.stack(ratios)))
        else:  # the design-sized ratios (x, xsi, eta) over every rank
            sized = [(-1.01 * d.x / (v.x - self.alpha)), (1.01 * d.x / (self.beta - v.x)),
                     -1.01 * d.xsi / v.xsi, -1.01 * d.eta / v.eta]
            # (CuPy's max takes no ``initial``: a rank's empty slab is skipped)
            local = max((float(xp.max(r)) for r in sized if r.size), default=float("-inf"))
            ratios = [xp.max(-1.01 * dv / pv) for pv, dv in zip(
                (v.y, v.z, v.lam, v.mu, v.zet, v.s), (d.y, d.z, d.lam, d.mu, d.zet, d.s))
                if pv.size]
            worst = max([float(r) for r in ratios] + [self.sums.max(local)])
        return 1.0 / max(worst, 1.0)


def mma_subsolve(low, upp, alpha, beta, p0, q0, P, Q, b, *, a0: float = 1.0, a=None,
                 c=1000.0, d=1.0, epsimin: float = EPSIMIN,
                 max_newton: int = 200, max_halvings: int = 50, sums=LocalSums):
    """Solve the MMA subproblem by a primal-dual interior-point method.

    For each relaxation epsilon = 1, 0.1, ... down to ``epsimin``, Newton steps (each
    damped to stay interior, then halved until the KKT residual's norm decreases) run until
    the largest residual is below 0.9 epsilon.

    Args:
        low, upp, alpha, beta, p0, q0: (n,) asymptotes, bounds, objective coefficients.
        P, Q: (m, n) constraint coefficients; b: (m,).
        a0, a, c, d: the artificial variables' weights (a: (m,), c and d scalars or (m,)).

    Returns:
        x (n,), y (m,), z (1,), lam (m,).
    """
    xp = array_namespace(p0)
    m = b.shape[0]
    a = xp.zeros(m) if a is None else xp.broadcast_to(xp.asarray(a, dtype=xp.float64), (m,))
    c = xp.broadcast_to(xp.asarray(c, dtype=xp.float64), (m,))
    d = xp.broadcast_to(xp.asarray(d, dtype=xp.float64), (m,))
    sub = _Subproblem(low, upp, alpha, beta, p0, q0, P, Q, b, a0, a, c, d, sums)

    x = 0.5 * (alpha + beta)
    ones_m = xp.ones(m)
    v = _Point(
        x=x,
        y=ones_m.copy(),
        z=xp.ones(1),
        lam=ones_m.copy(),
        xsi=xp.maximum(1.0 / (x - alpha), 1.0),
        eta=xp.maximum(1.0 / (beta - x), 1.0),
        mu=xp.maximum(ones_m, 0.5 * c),
        zet=xp.ones(1),
        s=ones_m.copy(),
    )
    epsi = 1.0
    while epsi > epsimin:
        norm, worst = sub.residual_norm(v, epsi)
        for _ in range(max_newton):
            if worst <= 0.9 * epsi:
                break
            direction = sub.newton_direction(v, epsi)
            step = sub.max_step(v, direction)
            for _ in range(max_halvings):
                trial = v.moved(direction, step)
                new_norm, new_worst = sub.residual_norm(trial, epsi)
                if new_norm <= norm:
                    break
                step *= 0.5
            v = trial
            norm = new_norm
            worst = new_worst
        epsi *= 0.1
    return v.x, v.y, v.z, v.lam


def mma_step(x, xmin, xmax, df0, g, dg, *, xold1=None, xold2=None, low=None, upp=None,
             move: float = 0.5, asyinit: float = 0.5, asyincr: float = 1.2,
             asydecr: float = 0.7, c: float = 1000.0, a0: float = 1.0,
             d: float = 1.0, a=None, sums=LocalSums) -> MMAStep:
    """One MMA iteration: asymptotes, approximation, subproblem solve.

    Args:
        x: (n,) current design; xmin, xmax: (n,) bounds (or scalars).
        df0: (n,) objective gradient; g: (m,) constraint values (``g <= 0`` feasible);
            dg: (m, n) constraint gradients.
        xold1, xold2: the two previous iterates (None at the start); low, upp: the
            previous asymptotes (None at the start).
        move: largest change of a variable, as a fraction of its bound range.
        asyinit, asyincr, asydecr: asymptote initialization and adaptation factors.
        c, a0, d, a: weights of the artificial variables (a: (m,), default 0). With
            df0 = 0, a0 = 1 and a_i = 1 on some rows, the step minimizes the largest of
            those rows (z bounds them; z >= 0, so they must be positive: shift them).
        sums: sums over the design variables (:class:`LocalSums`, or a distributed
            run's reductions over every rank's part of the design).

    Returns:
        An :class:`MMAStep` whose arrays have ``x``'s array module and dtype.
    """
    xp = array_namespace(x)
    n = x.shape[0]

    def f64(a, shape=None):
        a = xp.asarray(a, dtype=xp.float64)
        return a if shape is None else xp.broadcast_to(a, shape)

    x64 = f64(x)
    xmin64, xmax64 = f64(xmin, (n,)), f64(xmax, (n,))
    g64 = f64(g).reshape(-1)
    dg64 = f64(dg).reshape(g64.shape[0], n)
    old1 = None if xold1 is None else f64(xold1)
    old2 = None if xold2 is None else f64(xold2)
    low64 = None if low is None else f64(low)
    upp64 = None if upp is None else f64(upp)

    low64, upp64 = moving_asymptotes(x64, xmin64, xmax64, old1, old2, low64, upp64,
                                     asyinit, asyincr, asydecr)
    alpha, beta, p0, q0, P, Q, b = mma_approximation(
        x64, xmin64, xmax64, low64, upp64, f64(df0).reshape(n), g64, dg64, move, sums)
    x_new, y, z, lam = mma_subsolve(low64, upp64, alpha, beta, p0, q0, P, Q, b,
                                    a0=a0, a=a, c=c, d=d, sums=sums)
    dtype = x.dtype
    return MMAStep(
        x=xp.clip(x_new, xmin64, xmax64).astype(dtype),
        low=low64.astype(dtype),
        upp=upp64.astype(dtype),
        y=y,
        z=float(z[0]),
        lam=lam,
    )
