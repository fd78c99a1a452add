"""Built-in mesh sources."""

from __future__ import annotations

from pydantic import field_validator

from femopt.mesh.mesh import Mesh
from femopt.mesh.structured import structured_grid
from femopt.plugins.manager import hookimpl
from femopt.plugins.registry import Component, Options


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
        return v


class StructuredMesh(Component):
    name = "structured"
    summary = "Box of quad4 (2D) or hex8 (3D) cells with physical dimensions"
    Options = StructuredOptions

    def __init__(self, options: StructuredOptions):
        if len(options.size) != len(options.shape):
            raise ValueError("mesh.size must have as many entries as mesh.shape")
        if options.origin is not None and len(options.origin) != len(options.shape):
            raise ValueError("mesh.origin must have as many entries as mesh.shape")
        self.options = options

    def build(self) -> Mesh:
        o = self.options
        return structured_grid(o.shape, o.size, o.origin)


@hookimpl
def femopt_register_meshes(registry) -> None:
    registry.add("mesh", StructuredMesh)
