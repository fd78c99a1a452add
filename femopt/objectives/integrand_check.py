"""Checks of a function's integrand when the problem is built, with located errors.

An integrand is run once on a probe (a few cells, random states, dual numbers seeded on
the states, the density and the coordinates). What would make its generated derivatives
wrong or its values unusable is reported as an :class:`IntegrandError` naming the
function and the integrand's file and line:

- Python control flow on a traced value (``if u > 0:``, ``max(u, 0)``):
  :class:`femopt.adjoint.dual.TracedBranchError`;
- a function femopt cannot differentiate (``math.sin(u)``, ``np.sin(u)``): TypeError;
- a result that is not one scalar per cell or point (two for a ratio).
"""

from __future__ import annotations

import linecache
import traceback
from typing import Any

from femopt.adjoint.dual import Dual, TracedBranchError
from femopt.backend import array_namespace
from femopt.errors import PluginError


class IntegrandError(PluginError, ValueError):
    """An integrand that femopt cannot run or differentiate. A ValueError, so that the
    model reports it at the function's section of the problem file (exit code 2)."""


class IntegrandShapeError(TypeError):
    """An integrand returned something other than one scalar per point."""


def integrand_code(fn: Any):
    return type(fn).integrand.__code__


def where(fn: Any, exc: BaseException | None = None) -> str:
    """'FILE:LINE: `source`' of the integrand's line that raised ``exc`` (the innermost
    frame in the integrand's file), or of its ``def`` line."""
    code = integrand_code(fn)
    path, line = code.co_filename, code.co_firstlineno
    if exc is not None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename == path]
        if frames:
            line = frames[-1].lineno
    src = linecache.getline(path, line).strip()
    return f"{path}:{line}" + (f": `{src}`" if src else "")


def located(fn: Any, exc: BaseException) -> IntegrandError:
    """The IntegrandError for an exception raised while probing ``fn``'s integrand."""
    head = f"function '{fn.name}': integrand at {where(fn, exc)}"
    if isinstance(exc, TracedBranchError):
        return IntegrandError(f"{head}: {exc}")
    if isinstance(exc, IntegrandShapeError):
        return IntegrandError(f"function '{fn.name}': integrand at {where(fn)}: {exc}")
    if isinstance(exc, TypeError):
        return IntegrandError(
            f"{head}: {exc} (femopt differentiates + - * / ** and the functions of the "
            "'ops' argument: ops.sqrt, ops.exp, ops.log, ops.tanh, ops.abs, ops.max, "
            "ops.select_lt; math and numpy functions cannot take its traced values)")
    return IntegrandError(f"{head}: raised {type(exc).__name__}: {exc}")


def describe(out: Any) -> str:
    if isinstance(out, Dual):
        out = out.v
    if isinstance(out, (list, tuple)):
        return f"a {type(out).__name__} of {len(out)} values"
    shape = getattr(out, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else repr(type(out))


def point_values(out: Any, n_out: int, shape: tuple[int, int]) -> list[Any]:
    """The integrand's result as a list of ``n_out`` scalars, each a float, an array or a
    dual broadcastable to ``shape`` (n_cases, n_cells).

    Raises:
        IntegrandShapeError otherwise.
    """
    want = ("one scalar per cell or point" if n_out == 1 else
            f"{n_out} scalars (numerator, denominator) per cell or point")
    if n_out == 1:
        parts = [out]
    elif isinstance(out, (list, tuple)) and len(out) == n_out:
        parts = list(out)
    else:
        raise IntegrandShapeError(f"returned {describe(out)}; it must return {want}")
    for part in parts:
        v = part.v if isinstance(part, Dual) else part
        if isinstance(v, (int, float)):
            continue
        s = getattr(v, "shape", None)
        if s is None or len(s) > 2 or not _broadcasts(tuple(s), shape):
            raise IntegrandShapeError(
                f"returned {describe(part)} for {shape[1]} cells and {shape[0]} load "
                f"case(s); it must return {want}")
    return parts


def _broadcasts(s: tuple[int, ...], shape: tuple[int, int]) -> bool:
    full = (1,) * (2 - len(s)) + s
    return all(a in (1, b) for a, b in zip(full, shape))


def probe(fn: Any, ue: Any, rho: Any, coords: Any, cells: Any) -> None:
    """Run ``fn``'s integrand on duals at the probe (values and all derivatives).

    Raises:
        IntegrandError naming the function and the integrand's line.
    """
    xp = array_namespace(ue)
    try:
        fn._evaluate(xp, ue, rho, coords, cells, seed_u=True, seed_x=False)
        fn._evaluate(xp, ue, rho, coords, cells, seed_u=False, seed_x=True)
    except (IntegrandError, PluginError):
        raise
    except Exception as exc:  # any failure of the plugin's code is located
        raise located(fn, exc) from None
