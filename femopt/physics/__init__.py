"""Physics: each one a plugin written as its element integrand (an element kernel), from
which the element matrices, rigid modes, adjoint and GPU kernels are derived."""

from femopt.physics.base import Physics

__all__ = ["Physics"]
