"""What a design's evaluation checks of the functions' values and gradient terms at run
time: numbers (a plugin's defect otherwise), finite (a failure of the run at that design
iteration, exit 1), each error naming the function."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.backend import array_namespace
from femopt.errors import PluginError, RunError


def check_terms(model: Any, values: list[float], terms: list[tuple[Any, Any]],
                finite: Any = None) -> None:
    """Every function's gradient terms finite (a RunError naming the function, its term
    and the design iteration: a run-time failure, exit 1); ``finite(a)`` says whether an
    array is (default: all of its entries here)."""
    xp = array_namespace(*[t for pair in terms for t in pair])
    if finite is None:
        finite = lambda a: bool(xp.isfinite(a).all())  # noqa: E731
    for fn, (pr, adj) in zip(model.functions(), terms):
        for what, g in (("partial_rho", pr), ("adjoint term", adj)):
            if not finite(g):
                raise RunError(f"the gradient of function '{fn.name}' ({what}) is not "
                               f"finite at design iteration {len(model.history) + 1}")


def checked_values(model: Any, values: list[Any], functions: list[Any] | None = None
                   ) -> list[float]:
    """Function values as floats. A value that is not a number is a plugin's defect
    (PluginError); a non-finite number is a failure of the run at this design (RunError,
    exit 1), naming the function and the design iteration."""
    out = []
    for fn, v in zip(model.functions() if functions is None else functions, values):
        if not isinstance(v, (int, float, np.floating)):
            raise PluginError(f"function '{fn.name}' returned a value that is not a "
                              f"number: {v!r}")
        if not np.isfinite(v):
            raise RunError(f"function '{fn.name}' is not finite ({float(v)}) at design "
                           f"iteration {len(model.history) + 1}")
        out.append(float(v))
    return out
