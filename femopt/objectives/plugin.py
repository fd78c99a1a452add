"""Built-in objective and constraint functions."""

from femopt.objectives.compliance import Compliance, ThermalCompliance
from femopt.objectives.eigenfrequency import Eigenfrequency
from femopt.objectives.displacement import CompliantMechanism, Displacement
from femopt.objectives.local_volume import LocalVolume
from femopt.objectives.stress import StressPNorm
from femopt.objectives.temperature import MeanTemperature
from femopt.objectives.volume import Volume
from femopt.objectives.weighted_sum import WeightedSum
from femopt.plugins.manager import hookimpl


@hookimpl
def femopt_register_functions(registry) -> None:
    registry.add("function", Compliance)
    registry.add("function", ThermalCompliance)
    registry.add("function", Volume)
    registry.add("function", Displacement)
    registry.add("function", CompliantMechanism)
    registry.add("function", StressPNorm)
    registry.add("function", MeanTemperature)
    registry.add("function", WeightedSum)
    registry.add("function", LocalVolume)
    registry.add("function", Eigenfrequency)
