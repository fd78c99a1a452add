"""The results directory: summary.json, history.csv, design.vtu and pictures."""

from __future__ import annotations

import csv
import errno
import json
import os
import platform
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from femopt.backend import to_host
from femopt.backend.rows import RowSource, cell_rows
from femopt.errors import InputError

# cvxopt is optional (the `cholmod` extra): "not installed" says the run used SuperLU
DEPENDENCIES = ("numpy", "scipy", "pluggy", "pydantic", "meshio", "nlopt", "matplotlib",
                "pyyaml", "rich", "scikit-image", "trimesh", "ezdxf", "h5py", "pyamg",
                "mapbox-earcut", "cvxopt")


def versions() -> dict[str, str]:
    from femopt import __version__

    out = {"femopt": __version__, "python": platform.python_version()}
    for dist in DEPENDENCIES:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def prepare_output_dir(path: Path) -> Path:
    """Create (or reuse) the results directory; InputError if it cannot be written."""
    if path.exists() and not path.is_dir():
        raise InputError(f"output directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"output directory {path} is not writable")
    return path


def check_output_dir(path: Path) -> None:
    """Fail early (before any work) when ``path`` could not be created or written."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise InputError(f"cannot create output directory {path}: {p} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"output directory {path} is not writable ({p} is read-only)")


@contextmanager
def atomic_write(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; when the block ends normally it
    is renamed over ``path`` (atomic), when it raises it is removed and ``path`` is left as
    it was. ``tmp`` names the temporary file where a writer needs its suffix."""
    path = Path(path)
    tmp = tmp or path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


SPACE_MARGIN = 64 << 10  # bytes kept free beyond what a write needs (HDF5 metadata)


def ensure_space(directory: Path, nbytes: int) -> None:
    """Raise OSError(ENOSPC) when ``directory``'s file system has less than ``nbytes``
    (plus a margin) free: a writer that cannot take a full disk gracefully (HDF5) is
    not started then."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return
    free = st.f_bavail * st.f_frsize
    if free < nbytes + SPACE_MARGIN:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free} bytes free, "
                      f"{nbytes + SPACE_MARGIN} needed)", str(directory))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class HistoryWriter:
    """history.csv, one row per iteration, flushed as the run goes."""

    def __init__(self, path: Path, constraint_names: list[str], extra_names: list[str]):
        self.file = path.open("w", newline="", encoding="utf-8")
        self.extra_names = extra_names
        self.writer = csv.writer(self.file)
        self.writer.writerow(["iteration", "objective", *constraint_names, "change", "seconds",
                              *extra_names])
        self.file.flush()

    def write(self, rec) -> None:
        self.writer.writerow([rec.iteration, repr(rec.objective),
                              *(repr(v) for v in rec.constraints.values()),
                              repr(rec.change), f"{rec.seconds:.6f}",
                              *(repr(rec.extra.get(k, "")) for k in self.extra_names)])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class DesignResult:
    """What exporters need: the mesh and fields of the final design, the length unit,
    the cells that must stay solid in an exported part, and the 2D thickness."""

    mesh: Any
    cell_data: dict[str, np.ndarray]
    point_data: dict[str, np.ndarray]
    unit: str = "mm"
    solid: np.ndarray | None = None  # cell indices
    thickness: float = 1.0
    name: str = ""  # the problem's name


def design_result(model, x: np.ndarray | RowSource, state) -> DesignResult:
    """The final design of a run: ``state`` is the final analysis at ``x``, whose
    densities are taken as they are (on the GPU path the host filters were never built:
    a 33M-cell grid's filter matrix would take minutes). Fields a device path keeps on
    the device (:class:`~femopt.backend.rows.RowSource`: ``x``, the final analysis'
    with ``lazy``) stay there: the writers read them by slabs."""
    rho = state.rho if isinstance(state.rho, RowSource) else \
        np.asarray(to_host(state.rho), dtype=float)
    k = model.physics.dofs_per_node
    point = {}
    # the static state, where a function reads it (a frequency problem without loads
    # solves none: no all-zero field)
    for c, name in enumerate(model.case_names if model.static else ()):
        field = model.physics.field_name
        key = field if len(model.case_names) == 1 else f"{field}_{name}"
        point[key] = by_node(state.u[c], k)
    point.update(mode_fields(model, lazy=isinstance(rho, RowSource)))
    if x.shape[0] != rho.shape[0]:  # the reduced variables of a design map: one per cell
        x = (cell_rows(model.path.stages[0].forward(x.array)) if isinstance(x, RowSource)
             else model.filters[0].forward(np.asarray(x, float)))
    if not isinstance(x, RowSource):
        x = np.asarray(x, float)
    return DesignResult(model.mesh, {"density": rho, "design": x}, point,
                        model.problem.unit, kept_cells(model.problem, model.mesh),
                        physics_thickness(model.problem), model.name)


def by_node(v: np.ndarray | RowSource, k: int) -> np.ndarray | RowSource:
    """A state vector node by node: a node-major dof vector as (n_nodes, k), (n_nodes,)
    when ``k`` is 1; a :class:`RowSource` is so already."""
    if isinstance(v, RowSource):
        return v
    v = v.reshape(-1, k)
    return v[:, 0] if k == 1 else v


def _modal_name(model, position: int, term: int | None = None) -> str:
    """The prefix of a function of eigenvalues' outputs: the objective's none, a
    constraint's its label; a weighted sum's term of eigenvalues adds "term<j>_"."""
    name = "" if position == 0 else f"{model.bounds[position - 1].label}_"
    return name if term is None else f"{name}term{term}_"


def mode_fields(model, lazy: bool = False) -> dict[str, np.ndarray | RowSource]:
    """The eigenvectors of every function of eigenvalues at the final design as point
    fields "mode_1", "mode_2", ... (lowest first, M-normalised; a constraint's as
    "<label>_mode_1", ...; a weighted sum's terms' as "term1_mode_1", ...), shaped like
    the displacement field; with ``lazy`` kept where a device path has them."""
    k = model.physics.dofs_per_node
    out = {}
    for position, term, _, phis in model.final_modes(lazy):
        for i, phi in enumerate(phis, start=1):
            out[f"{_modal_name(model, position, term)}mode_{i}"] = by_node(phi, k)
    return out


def final_frequencies(model) -> dict[str, list[float]]:
    """The eigenfrequencies (rad/s, lowest first) of every function of eigenvalues at the
    final design, by the name its modes have in the design file ("modes": the
    objective's; "<label>_modes": a constraint's; "term<j>_modes": a sum's terms')."""
    out = {}
    for position, term, lams, _ in model.final_modes(lazy=True):  # no vector copied
        w = np.sqrt(np.maximum(lams, 0.0))
        out[f"{_modal_name(model, position, term)}modes"] = [float(v) for v in w]
    return out


def physics_thickness(problem) -> float:
    """The out-of-plane thickness of a 2D problem's physics (1 when it has none)."""
    t = problem.physics.get("thickness", 1.0)
    return float(t) if isinstance(t, (int, float)) else 1.0


KEPT_ROWS = 1 << 18  # cells per chunk of :func:`kept_cells`' pass over the cells


def kept_cells(problem, mesh) -> np.ndarray:
    """Cells an exported part keeps solid whatever their density: passive solid regions,
    cells touching a nodal load, and cells touching a point support. (Face and box
    supports are where the design meets them: forcing a whole face solid would add a plate
    the optimizer did not ask for, and on a symmetry plane would be plainly wrong.)"""
    from femopt.mesh.mesh import row_chunks
    from femopt.mesh.regions import RegionError, select_cells, select_nodes

    keep = np.zeros(mesh.n_cells, dtype=bool)
    for ps in problem.design.passive:  # a later entry wins where regions overlap
        keep[select_cells(ps.region, mesh)] = ps.value == "solid"
    nodes = np.zeros(mesh.n_nodes, dtype=bool)
    loads = list(problem.loads or []) + [ld for c in problem.load_cases or [] for ld in c.loads]
    regions = [ld.region for ld in loads if not ld.body and ld.region is not None]
    regions += [s.region for s in problem.supports if s.region.point is not None]
    for region in regions:
        try:
            nodes[select_nodes(region, mesh)] = True
        except RegionError:
            continue
    # by rows: a grid's cells are never held whole (KEPT_ROWS cells' nodes, 16 MiB)
    for i, j in row_chunks(mesh.n_cells, KEPT_ROWS):
        keep[i:j] |= nodes[mesh.cell_rows(i, j)].any(axis=1)
    return np.flatnonzero(keep)
