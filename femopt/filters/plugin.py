"""Built-in filters."""

from femopt.filters.design_map import DesignMap
from femopt.filters.heaviside import Heaviside
from femopt.filters.overhang import OverhangFilter
from femopt.filters.radius import DensityFilter, SensitivityFilter
from femopt.plugins.manager import hookimpl


@hookimpl
def femopt_register_filters(registry) -> None:
    registry.add("filter", SensitivityFilter)
    registry.add("filter", DensityFilter)
    registry.add("filter", Heaviside)
    registry.add("filter", OverhangFilter)
    registry.add("filter", DesignMap)
