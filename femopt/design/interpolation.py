"""Material interpolation m(rho) between void (``min``) and solid (1)."""

from __future__ import annotations

from typing import Any

from femopt.backend import array_namespace


class Interpolation:
    """SIMP: m = min + rho^p (1 - min); RAMP: m = min + rho / (1 + q (1 - rho)) (1 - min)."""

    def __init__(self, kind: str, penalty: float, minimum: float):
        self.kind, self.penalty, self.min = kind, penalty, minimum

    def value(self, rho: Any) -> Any:
        if self.kind == "simp":
            return self.min + rho**self.penalty * (1.0 - self.min)
        q = self.penalty
        return self.min + rho / (1.0 + q * (1.0 - rho)) * (1.0 - self.min)

    def derivative(self, rho: Any) -> Any:
        if self.kind == "simp":
            p = self.penalty
            return p * rho ** (p - 1.0) * (1.0 - self.min) if p != 0 else 0.0 * rho
        q = self.penalty
        return (1.0 + q) / (1.0 + q * (1.0 - rho)) ** 2 * (1.0 - self.min)


class MassInterpolation:
    """Mass factor m_M(rho) of the mass matrix M(rho) = sum_e m_M(rho_e) M0_e.

    ``linear``: m_M = rho, the mass of the material that is there. ``du_olhoff`` (Du and
    Olhoff 2007, Struct Multidisc Optim 34:91-110, eq. 4): rho above ``threshold``
    (0.1), c rho^6 at or below it, c = threshold^-5 so that the two meet (its slope
    jumps from 6 to 1 there). ``du_olhoff_smooth`` (their eq. 4b): rho above the
    threshold t, c1 rho^6 + c2 rho^7 at or below it with c1 = 6 t^-5, c2 = -5 t^-6 (6e5
    and -5e6 at t = 0.1), which meets rho with its value and its slope (continuously
    differentiable, positive and increasing below t). With SIMP stiffness rho^p, a
    low-density cell's stiffness-to-mass ratio rho^(p-1) would go to 0 and its local
    modes would become the lowest (spurious modes in the void); rho^(p-6) grows instead,
    so void cells vibrate far above the structure's frequencies. Backend-neutral (NumPy
    or CuPy, from ``rho``).
    """

    EXPONENT = 6.0

    def __init__(self, kind: str, threshold: float = 0.1):
        self.kind, self.threshold = kind, threshold
        self.c = threshold ** (1.0 - self.EXPONENT)
        self.c1, self.c2 = 6.0 * threshold**-5, -5.0 * threshold**-6

    def value(self, rho: Any) -> Any:
        if self.kind == "linear":
            return 1.0 * rho
        xp = array_namespace(rho)
        if self.kind == "du_olhoff_smooth":
            low = rho**6 * (self.c1 + self.c2 * rho)
        else:
            low = self.c * rho**self.EXPONENT
        return xp.where(rho > self.threshold, rho, low)

    def derivative(self, rho: Any) -> Any:
        if self.kind == "linear":
            return 0.0 * rho + 1.0
        xp = array_namespace(rho)
        if self.kind == "du_olhoff_smooth":
            low = rho**5 * (6.0 * self.c1 + 7.0 * self.c2 * rho)
        else:
            low = self.EXPONENT * self.c * rho ** (self.EXPONENT - 1.0)
        return xp.where(rho > self.threshold, 1.0 + 0.0 * rho, low)
