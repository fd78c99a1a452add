"""An example femopt plugin: two physics, each written as its element integrand alone.

- ``reaction_diffusion``: -div(k grad u) + c u = f (a scalar Helmholtz-type equation with
  a positive reaction term), :mod:`femopt_example_physics.reaction_diffusion`;
- ``orthotropic_elasticity``: linear elasticity of an orthotropic material whose axes are
  options, stiffness from engineering constants (plane stress in 2D),
  :mod:`femopt_example_physics.orthotropic`.

Neither writes an element matrix, a CUDA kernel or a derivative: femopt builds the
element matrices, the rigid modes, the adjoint's sensitivity kernels and the GPU kernels
from the integrands, so both run on the CPU, the GPU grid path and the GPU mesh path.
"""

from __future__ import annotations

from femopt.plugins import hookimpl

from femopt_example_physics.orthotropic import OrthotropicElasticity
from femopt_example_physics.reaction_diffusion import ReactionDiffusion

__version__ = "0.1.0"
__all__ = ["OrthotropicElasticity", "ReactionDiffusion"]


@hookimpl
def femopt_register_physics(registry) -> None:
    registry.add("physics", ReactionDiffusion)
    registry.add("physics", OrthotropicElasticity)
