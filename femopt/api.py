"""The Python API: build a problem from a file, a YAML string or a dict, run it with a
per-iteration callback, and get a :class:`Result` (design, history, fields, summary) that
exports like ``femopt export``.

    import femopt

    problem = femopt.Problem.from_file("problems/mbb_beam.yaml")
    result = problem.run(out="results/mbb", callback=lambda rec: print(rec.objective))
    result.summary["objective"], result.history[-1].iteration
    result.export("stl")

The typed pieces of the schema (:class:`Support`, :class:`Load`, :class:`LoadCase`,
:class:`Spring`, :class:`Region`) may stand in for their dicts: they are validated when
created and written out as the keys they were given.

A dict goes through the same schema as a problem file and fails with the same
:class:`~femopt.errors.ProblemError` messages; its key paths are exact, its line numbers
point into :attr:`Problem.text`, the YAML the dict was written as. A mesh file path in a
dict (``mesh.path``) is relative to ``base_dir`` (default: the working directory), as a
file's is relative to the file; the results directory is relative to the working
directory in both cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from femopt.errors import InputError
from femopt.plugins.manager import hookimpl
# typed pieces of a problem, usable as values in Problem.from_dict
from femopt.problem.schema import Load, LoadCase, Region, Spring, Support  # noqa: F401

Callback = Callable[[Any], Any]


def _plain(value: Any) -> Any:
    """Nested mappings and sequences of plain values; typed objects (pydantic models,
    NumPy arrays and scalars) as their plain form."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_unset=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class Problem:
    """A validated problem; build it with :meth:`from_file`, :meth:`from_yaml` or
    :meth:`from_dict`. Raises :class:`~femopt.errors.ProblemError` (every error, located)
    on bad input."""

    def __init__(self, loaded, source: bytes):
        self.loaded = loaded
        self.filename = loaded.filename
        self.source = source  # the problem's text as written into the results directory
        self.text = source.decode("utf-8")

    @classmethod
    def from_file(cls, path: str | Path) -> Problem:
        """The problem file at ``path`` (read and validated as ``femopt run`` does)."""
        from femopt.plugins.manager import get_registry
        from femopt.problem.load import read_problem

        loaded = read_problem(path, get_registry())
        return cls(loaded, Path(path).read_bytes())

    @classmethod
    def from_yaml(cls, text: str, filename: str = "<yaml>",
                  base_dir: str | Path | None = None) -> Problem:
        """A problem file's ``text``; ``filename`` names it in error messages."""
        from femopt.plugins.manager import get_registry
        from femopt.problem.load import parse_problem

        base = Path(base_dir) if base_dir is not None else Path.cwd()
        return cls(parse_problem(text, str(base / filename), get_registry()),
                   text.encode("utf-8"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> Problem:
        """A problem as nested mappings and lists (or pydantic objects), laid out as in
        a problem file (docs/problem-reference.md)."""
        import yaml

        text = yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=None)
        return cls.from_yaml(text, "<dict>", base_dir)

    @property
    def name(self) -> str:
        return self.loaded.problem.name

    def build(self, device: str | None = None):
        """The built model (mesh, physics, solver, optimizer): what a run iterates on.
        ``device`` (auto, cpu, gpu) overrides the problem's."""
        from femopt.evaluation.model import Model
        from femopt.plugins.manager import get_registry
        from femopt.problem.size import check_size
        from femopt.problem.yamlload import gc_paused

        with gc_paused():
            check_size(self.loaded, device)  # before the mesh or anything else is allocated
            return Model(self.loaded, get_registry(), device)

    def run(self, out: str | Path | None = None, *, max_iter: int | None = None,
            callback: Callback | None = None, device: str | None = None,
            quiet: bool = True, stream=None) -> Result:
        """Optimize, write the results directory (``out``, else ``output.dir``, else
        ``results/<name>``, as ``femopt run`` does) and return the :class:`Result`.

        ``callback(record)`` is called after every design iteration with its
        :class:`~femopt.optimizers.base.IterationRecord` (iteration, objective,
        constraints, change, seconds); its return value is ignored. Progress lines are
        printed unless ``quiet``.
        """
        from femopt.plugins.manager import get_manager
        from femopt.runner import run_model

        model = self.build(device)
        watcher = _Watcher(callback)
        pm = get_manager()
        pm.register(watcher)
        try:
            run = run_model(model, self.source, out, max_iter, quiet, stream,
                            source=Path(self.filename) if Path(self.filename).is_file() else None)
        finally:
            pm.unregister(watcher)
        return Result(run.out_dir, run.summary, list(model.history), model)


class _Watcher:
    """A plugin registered for one run: hands each iteration to the callback."""

    def __init__(self, callback: Callback | None):
        self.callback = callback

    @hookimpl
    def femopt_iteration(self, record: Any) -> None:
        if self.callback is not None:
            self.callback(record)


@dataclass
class Result:
    """A finished run: its results directory, ``summary.json``, the iteration records,
    and the final design and fields read back on demand."""

    out_dir: Path
    summary: dict[str, Any]
    history: list[Any]
    model: Any = field(default=None, repr=False)

    @property
    def objective(self) -> float:
        return float(self.summary["objective"])

    @property
    def iterations(self) -> int:
        return int(self.summary["iterations"])

    @property
    def design(self) -> np.ndarray:
        """The final design variables, one per cell."""
        return np.load(self.out_dir / "design.npy")

    @property
    def density(self) -> np.ndarray:
        """The final physical (filtered) densities, one per cell."""
        return np.load(self.out_dir / "density.npy")

    def fields(self) -> dict[str, np.ndarray]:
        """The final design's cell and point fields (density, displacement or
        temperature...) as written into the results directory's design file:
        design.vtu (read by meshio), else design.vti (femopt's own reader)."""
        vtu, vti = self.out_dir / "design.vtu", self.out_dir / "design.vti"
        if vtu.exists():
            import meshio

            m = meshio.read(vtu)
            out = {k: np.asarray(v[0]) for k, v in m.cell_data.items()}
            out.update({k: np.asarray(v) for k, v in m.point_data.items()})
            return out
        if vti.exists():
            from femopt.io.vti import read_vti

            image = read_vti(vti)
            return {**image.cell_data, **image.point_data}
        raise InputError(f"{self.out_dir}: no design.vtu or design.vti (add vtu or vti to "
                         "output.formats)")

    def export(self, fmt: str, out: str | Path | None = None, **options: Any) -> dict[str, Any]:
        """Write the design as ``fmt`` (stl, 3mf, obj, ply, dxf, svg, vtu, vti), as
        ``femopt export`` does; options: threshold, smooth, thickness, force, verify.
        Returns what was written and measured."""
        from femopt.io.export import export_result

        return export_result(self.out_dir, fmt, out=out, **options)


def run(problem: str | Path | Mapping[str, Any] | Problem, out: str | Path | None = None,
        **kwargs: Any) -> Result:
    """Run a problem given as a file path, a dict or a :class:`Problem`; keyword
    arguments as :meth:`Problem.run`."""
    if isinstance(problem, Problem):
        p = problem
    elif isinstance(problem, Mapping):
        p = Problem.from_dict(problem)
    else:
        p = Problem.from_file(problem)
    return p.run(out, **kwargs)
