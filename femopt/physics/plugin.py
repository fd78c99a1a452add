"""Built-in physics."""

from femopt.physics.elasticity import LinearElasticity
from femopt.physics.heat import HeatConduction
from femopt.plugins.manager import hookimpl


@hookimpl
def femopt_register_physics(registry) -> None:
    registry.add("physics", LinearElasticity)
    registry.add("physics", HeatConduction)
