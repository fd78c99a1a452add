"""Built-in linear solvers."""

from femopt.plugins.manager import hookimpl
from femopt.solvers.amg import AMGSolver
from femopt.solvers.direct import DirectSolver
from femopt.solvers.multigrid import MultigridSolver
from femopt.solvers.pcg import PCGSolver


@hookimpl
def femopt_register_solvers(registry) -> None:
    registry.add("solver", DirectSolver)
    registry.add("solver", PCGSolver)
    registry.add("solver", MultigridSolver)
    registry.add("solver", AMGSolver)
