"""The discrete adjoint: gradients of functions of the state with one solve each."""

from femopt.adjoint.sensitivity import function_gradients
from femopt.adjoint.taylor import taylor_test

__all__ = ["function_gradients", "taylor_test"]
