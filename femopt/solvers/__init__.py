"""Linear solvers that keep what they built (factorizations, preconditioners)."""

from femopt.solvers.direct import DirectSolver
from femopt.solvers.pcg import PCGSolver, pcg

__all__ = ["DirectSolver", "PCGSolver", "pcg"]
