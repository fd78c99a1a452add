"""Built-in physics."""

from femopt.assembly.element_kernel import ElementKernel
from femopt.assembly.elements import get_element
from femopt.physics.convection_diffusion import ConvectionDiffusion, convection_diffusion_kernel
from femopt.physics.elasticity import LinearElasticity, elasticity_kernel
from femopt.physics.heat import HeatConduction, heat_kernel
from femopt.plugins.manager import hookimpl


@hookimpl
def femopt_register_physics(registry) -> None:
    registry.add("physics", LinearElasticity)
    registry.add("physics", HeatConduction)
    registry.add("physics", ConvectionDiffusion)


def builtin_element_kernels() -> list[ElementKernel]:
    """The forward element kernels of the built-in physics (default parameters: the
    generated sources take them at run time), for every element and flow profile."""
    out = []
    for name in ("quad4", "hex8"):
        el = get_element(name)
        out += [elasticity_kernel(el), heat_kernel(el)]
        out += [convection_diffusion_kernel(el, profile) for profile in ("uniform", "channel")]
    return out
