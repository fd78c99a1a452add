"""Built-in optimizers: OC, femopt's MMA and nlopt's algorithms."""

from femopt.optimizers.mma_optimizer import MMA
from femopt.optimizers.nlopt_optimizer import NloptOptimizer
from femopt.optimizers.oc import OC
from femopt.plugins.manager import hookimpl


@hookimpl
def femopt_register_optimizers(registry) -> None:
    registry.add("optimizer", OC)
    registry.add("optimizer", MMA)
    registry.add("optimizer", NloptOptimizer)
