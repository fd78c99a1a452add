"""What `run` checks before its first solve, also run by `validate`: a problem that
validates is one that `run` starts."""

from __future__ import annotations

from typing import Any

from femopt.errors import InputError, Issue, ProblemError


def check_before_run(model: Any) -> None:
    """The formats of ``output.formats`` against the mesh (:func:`check_formats`), then
    the optimizer's own check of the problem (OC: one constraint that needs no solve and
    an objective that depends on the state; nlopt: an algorithm that takes the problem's
    constraints).

    Raises:
        ProblemError located at ``output.formats`` or at the ``optimizer`` section.
    """
    check_formats(model)
    check = getattr(model.optimizer, "check", None)
    if check is None:
        return
    try:
        with model.registry.guard("optimizer", model.optimizer.name, "check()"):
            check(model)
    except ProblemError:
        raise
    except InputError as exc:
        raise model.loaded.error(("optimizer",), str(exc)) from None


def check_formats(model: Any) -> None:
    """Each exporter of ``output.formats`` that refuses the model's mesh (its
    ``refusal``: vti a mesh that is not a structured grid, dxf and svg a 3D one) is an
    error located at its entry, found before the run rather than after it.

    Raises:
        ProblemError located at ``output.formats.<i>``.
    """
    issues: list[Issue] = []
    for i, fmt in enumerate(model.problem.output.formats):
        cls = model.registry.get("exporter", fmt).cls
        refusal = getattr(cls, "refusal", None)
        if refusal is None:
            continue
        with model.registry.guard("exporter", fmt, "refusal()"):
            why = refusal(model.mesh)
        if why:
            issues.append(model.loaded.issue(("output", "formats", i), why))
    if issues:
        raise ProblemError(model.loaded.filename, issues)
