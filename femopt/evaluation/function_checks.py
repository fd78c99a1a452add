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


def modal_parts(fn: Any) -> list[tuple[float, Any]]:
    """(weight, function of eigenvalues) pairs whose weighted sum is ``fn``'s part that
    the paths' eigensolve evaluates: ``fn`` itself, a weighted sum's terms of eigenvalues
    (nested sums too: the weights multiply), or none."""
    if is_eigen(fn):
        return [(1.0, fn)]
    terms = getattr(fn, "terms", None)
    if not terms:
        return []
    return [(w * wp, f) for w, t in zip(fn.weights, terms) for wp, f in modal_parts(t)]


def only_modal(fn: Any) -> bool:
    """A function of eigenvalues, or a sum of nothing else: no value of its own."""
    terms = getattr(fn, "terms", None)
    return is_eigen(fn) or (bool(terms) and all(only_modal(t) for t in terms))


def reads_state(fn: Any) -> bool:
    """Whether ``fn`` (a sum: any of its terms) reads the static state."""
    if is_eigen(fn):
        return False
    terms = getattr(fn, "terms", None)
    return any(reads_state(t) for t in terms) if terms else bool(fn.needs_state)


def check_functions(model: Any, issues: list[Issue]) -> None:
    """Set ``model.maximize`` and ``model.static``; refuse functions of eigenvalues (alone
    or in a sum) with an optimizer that cannot take them."""
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
    model.static = any(reads_state(fn) for fn in fns)
    paths = [("objective",)] + [("constraints", i) for i in range(len(model.bounds))]
    for path, fn in zip(paths, fns):
        parts = modal_parts(fn)
        if not parts or model.optimizer is None:
            continue
        if not getattr(model.optimizer, "takes_eigenvalue_functions", True):
            issues.append(loaded.issue(
                path + ("type",), f"optimizer '{model.optimizer.name}' cannot optimize "
                f"'{parts[0][1].name}': its update assumes a compliance-like objective (a "
                "gradient that never grows with density), which a function of eigenvalues "
                "is not (its mass grows with density too); use mma or nlopt"))
