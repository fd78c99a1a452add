"""Typed errors. Library code raises these; only the CLI maps them to exit codes.

Exit codes: 2 for bad input found before the first iteration (problem file, mesh, plugin
options, CLI arguments), 1 for failures once a run has started (solver breakdown,
non-finite values, a full disk; whatever a run raises becomes a RunError then, see
:mod:`femopt.io.failure`), 130/143 for SIGINT/SIGTERM.
"""

from __future__ import annotations

from dataclasses import dataclass


class FemoptError(Exception):
    """Base class of every error femopt raises on purpose."""

    exit_code = 1


class InputError(FemoptError):
    """Bad input: the user can fix it by changing a file or an argument."""

    exit_code = 2


@dataclass(frozen=True)
class Issue:
    """One located problem in a problem file."""

    path: str  # dotted key path, e.g. "filters.0.radius"
    message: str
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based

    def format(self, filename: str) -> str:
        where = filename
        if self.line is not None:
            where += f":{self.line}:{self.col or 1}"
        key = self.path or "<root>"
        return f"{where}: {key}: {self.message}"


class ProblemError(InputError):
    """One or more errors in a problem file, each with its position."""

    def __init__(self, filename: str, issues: list[Issue]):
        self.filename = filename
        self.issues = list(issues)
        super().__init__("\n".join(i.format(filename) for i in self.issues))


class MeshError(InputError):
    """A mesh or region that cannot be used."""


class PluginError(FemoptError):
    """A plugin failed to load, raised, or returned something unusable."""

    exit_code = 2


class SolverError(FemoptError):
    """A linear solve failed: singular system, breakdown, or no convergence.

    ``residuals``: an iterative solve's relative residual per iteration (empty when the
    failure is not one of convergence); the run's summary.json keeps them.
    """

    def __init__(self, message: str, residuals: list[float] | None = None):
        super().__init__(message)
        self.residuals = [float(r) for r in residuals or ()]


class SingularSystemError(InputError):
    """Supports leave the structure free to move: the system matrix is singular."""


class RunError(FemoptError):
    """A failure during an optimization run (non-finite values, ...)."""


class InvertedCellsError(RunError):
    """Node coordinates at which cells are inverted or degenerate (det J <= 0 somewhere in
    the cell): a shape optimization step went too far. ``cells`` holds their indices."""

    def __init__(self, message: str, cells):
        super().__init__(message)
        self.cells = cells
