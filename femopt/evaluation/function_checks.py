"""What a problem's functions ask of the rest of the problem, checked when the model is
built (located errors, exit code 2, nothing written): the objective's `maximize`, whether
any function reads a static state (else the problem needs no loads), and where functions
of eigenvalues can run."""

from __future__ import annotations

from typing import Any

from femopt.errors import Issue


def is_eigen(fn: Any) -> bool:
    """A function of eigenvalues (it declares an eigenproblem)."""
    return fn.eigen_problem() is not None


def check_functions(model: Any, issues: list[Issue]) -> None:
    """Set ``model.maximize`` and ``model.static``; refuse functions of eigenvalues inside
    sums and with an optimizer that cannot take them."""
    loaded = model.loaded
    maximize = loaded.sections["objective"].extra.get("maximize", False)
    if not isinstance(maximize, bool):
        issues.append(loaded.issue(("objective", "maximize"),
                                   f"expected true or false, got {maximize!r}"))
        maximize = False
    model.maximize = maximize
    if maximize and model.optimizer is not None and not getattr(
            model.optimizer, "takes_eigenvalue_functions", True):
        issues.append(loaded.issue(("objective", "maximize"), f"optimizer "
                                   f"'{model.optimizer.name}' minimizes a compliance-like "
                                   "objective (a gradient that never grows with density) "
                                   "and cannot maximize; use mma or nlopt"))
    fns = model.functions()
    if any(fn is None for fn in fns):  # a function's section is in error: reported
        model.static = True
        return
    model.static = any(fn.needs_state and not is_eigen(fn) for fn in fns)
    paths = [("objective",)] + [("constraints", i) for i in range(len(model.bounds))]
    for path, fn in zip(paths, fns):
        for term in getattr(fn, "terms", None) or []:
            if is_eigen(term):
                issues.append(loaded.issue(path + ("type",), f"'{fn.name}' cannot sum a "
                                           f"function of eigenvalues ('{term.name}'); use "
                                           "it as the objective or a constraint itself"))
        if not is_eigen(fn) or model.optimizer is None:
            continue
        if not getattr(model.optimizer, "takes_eigenvalue_functions", True):
            issues.append(loaded.issue(
                path + ("type",), f"optimizer '{model.optimizer.name}' cannot optimize "
                f"'{fn.name}': its update assumes a compliance-like objective (a gradient "
                "that never grows with density), which a function of eigenvalues is not "
                "(its mass grows with density too); use mma or nlopt"))
