"""What the end of a run tells the user: the files it wrote and the commands that come
next (export for CAD, ParaView for the fields and the history)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

# what each file of a results directory is, in the order they are listed
DESCRIPTIONS = {
    "summary.json": "objective, constraints, iterations, wall time, versions",
    "history.csv": "one row per iteration",
    "design.vtu": "the final design and its fields (ParaView)",
    "design.vti": "the final design and its fields on the grid (ParaView)",
    "series.xdmf": "the design at every saved iteration (ParaView time series)",
    "series.h5": "the arrays of series.xdmf",
    "convergence.png": "the convergence history",
    "design.png": "a picture of the design",
    "checkpoint.h5": "the state for femopt resume",
    "design.xdmf": "the final design over the ranks' pieces (ParaView, meshio)",
    "design.h5": "the arrays of design.xdmf (virtual: ranks/design.*.h5)",
    "checkpoint.json": "the state for femopt resume (pieces ranks/checkpoint-*.h5)",
    "design.npy": "design variables (NumPy)",
    "density.npy": "physical densities (NumPy)",
    "problem.yaml": "the problem as run",
}


def written_files(out_dir: Path) -> list[tuple[str, str]]:
    """(name, what) of the files of a results directory, known ones first."""
    names = sorted(p.name for p in Path(out_dir).iterdir()
                   if p.is_file() and not p.name.startswith("."))
    known = [n for n in DESCRIPTIONS if n in names]
    other = [n for n in names if n not in DESCRIPTIONS]
    return ([(n, DESCRIPTIONS[n]) for n in known]
            + [(n, "exported part" if n.startswith("design.") else "") for n in other])


def next_commands(out_dir: Path, summary: dict[str, Any], dim: int) -> list[str]:
    """The commands a user runs next on this results directory."""
    d = shlex.quote(str(out_dir))
    fmt = "stl" if dim == 3 else "dxf"
    lines = [f"femopt export {d} --format {fmt} --verify   # the part for CAD, re-analysed"]
    for name in ("design.vtu", "design.vti"):
        if (Path(out_dir) / name).exists():
            lines.append(f"paraview {shlex.quote(str(Path(out_dir) / name))}"
                         "   # the fields of the final design")
            break
    if not summary.get("converged", True) and (Path(out_dir) / "checkpoint.h5").exists():
        lines.append(f"femopt resume {d} --max-iter N   # continue the run")
    elif not summary.get("converged", True) and (Path(out_dir) / "checkpoint.json").exists():
        lines.append(f"femopt resume {d} --ranks {summary.get('ranks', 1)} --max-iter N"
                     "   # continue the run")
    return lines


def end_of_run_lines(out_dir: Path, summary: dict[str, Any], dim: int) -> list[str]:
    """The lines printed after ``done:``: files written, then the next commands."""
    files = written_files(out_dir)
    width = max((len(n) for n, _ in files), default=0)
    lines = [f"wrote {out_dir}/:"]
    lines += [f"  {n:{width}s}  {what}".rstrip() for n, what in files]
    lines.append("next:")
    lines += [f"  {c}" for c in next_commands(out_dir, summary, dim)]
    return lines
