"""Built-in objective and constraint functions."""

from femopt.objectives.compliance import Compliance, ThermalCompliance
from femopt.objectives.volume import Volume
from femopt.plugins.manager import hookimpl


@hookimpl
def femopt_register_functions(registry) -> None:
    registry.add("function", Compliance)
    registry.add("function", ThermalCompliance)
    registry.add("function", Volume)
