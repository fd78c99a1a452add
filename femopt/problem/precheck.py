"""What `run` checks before its first solve, also run by `validate`: a problem that
validates is one that `run` starts."""

from __future__ import annotations

from typing import Any

from femopt.errors import InputError, ProblemError


def check_before_run(model: Any) -> None:
    """The optimizer's own check of the problem (OC: one constraint that needs no solve
    and an objective that depends on the state; nlopt: an algorithm that takes the
    problem's constraints).

    Raises:
        ProblemError located at the ``optimizer`` section.
    """
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
