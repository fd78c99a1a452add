"""Material interpolation m(rho) between void (``min``) and solid (1)."""

from __future__ import annotations

from typing import Any


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
