"""Built-in mesh sources."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator

from femopt.mesh.mesh import Mesh
from femopt.mesh.meshfile import UNITS, read_mesh_file
from femopt.mesh.structured import structured_grid
from femopt.plugins.manager import hookimpl
from femopt.plugins.registry import Component, Options


# Lengths a grid may have, in the problem's unit: beyond them a cell's volume or stiffness
# leaves the range of double precision (a size of 1e308 or 5e-324).
MIN_LENGTH, MAX_LENGTH = 1e-12, 1e12


class StructuredOptions(Options):
    shape: list[int]
    """Cells per axis: [nx, ny] (quad4) or [nx, ny, nz] (hex8)."""
    size: list[float]
    """Physical size per axis, in the problem's length unit."""
    origin: list[float] | None = None
    """Coordinates of the lower corner (default: zeros)."""

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) not in (2, 3):
            raise ValueError("shape needs 2 (2D) or 3 (3D) entries")
        if any(n < 1 for n in v):
            raise ValueError("every entry of shape must be a positive number of cells")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: list[float]) -> list[float]:
        if len(v) not in (2, 3):
            raise ValueError("size needs 2 (2D) or 3 (3D) entries")
        if any(s <= 0 for s in v):
            raise ValueError("every entry of size must be positive")
        if any(not MIN_LENGTH <= s <= MAX_LENGTH for s in v):
            raise ValueError(f"every entry of size must lie between {MIN_LENGTH:g} and "
                             f"{MAX_LENGTH:g} (in the problem's length unit)")
        return v

    @field_validator("origin")
    @classmethod
    def _origin(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(abs(o) > MAX_LENGTH for o in v):
            raise ValueError(f"every entry of origin must lie within +-{MAX_LENGTH:g}")
        return v


class StructuredMesh(Component):
    name = "structured"
    summary = "Box of quad4 (2D) or hex8 (3D) cells with physical dimensions"
    Options = StructuredOptions

    def __init__(self, options: StructuredOptions):
        if len(options.size) != len(options.shape):
            raise ValueError("mesh.size must have as many entries as mesh.shape")
        small = [s / n for s, n in zip(options.size, options.shape) if s / n < MIN_LENGTH]
        if small:
            raise ValueError(f"cells of {small[0]:g} along an axis: a cell's side must be "
                             f"at least {MIN_LENGTH:g} (in the problem's length unit)")
        if options.origin is not None and len(options.origin) != len(options.shape):
            raise ValueError("mesh.origin must have as many entries as mesh.shape")
        self.options = options

    def build(self) -> Mesh:
        o = self.options
        return structured_grid(o.shape, o.size, o.origin)


class FileOptions(Options):
    path: str
    """Mesh file read by meshio (Gmsh .msh v2/v4, .vtu, .xdmf, Abaqus .inp, ...); a
    relative path is relative to the problem file. Elements: tri3, quad4, tet4, hex8."""
    unit: Literal["um", "mm", "cm", "m", "in", "ft"] | None = None
    """Length unit of the file's coordinates (default: the problem's `unit`); the
    coordinates are converted to the problem's unit."""


class FileMesh(Component):
    name = "file"
    summary = "Mesh file read by meshio (tri3, quad4, tet4, hex8) with its named groups"
    Options = FileOptions

    def __init__(self, options: FileOptions):
        self.options = options
        # Set by the problem builder before build(): where the problem file lives and the
        # problem's length unit.
        self.base_dir = Path(".")
        self.problem_unit = "mm"

    def build(self) -> Mesh:
        path = Path(self.options.path).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        unit = self.options.unit or self.problem_unit
        return read_mesh_file(path, UNITS[unit] / UNITS[self.problem_unit])


def locate(source, problem_dir: Path, problem_unit: str):
    """A mesh source set up to resolve a relative file path against ``problem_dir`` (the
    problem file's folder, wherever the command runs) and to convert the file's length
    unit to the problem's; returns ``source``."""
    if hasattr(source, "base_dir"):
        source.base_dir = Path(problem_dir)
    if hasattr(source, "problem_unit"):
        source.problem_unit = problem_unit
    return source


@hookimpl
def femopt_register_meshes(registry) -> None:
    registry.add("mesh", StructuredMesh)
    registry.add("mesh", FileMesh)
