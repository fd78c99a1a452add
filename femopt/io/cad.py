"""CAD exporters: the thresholded design as a part a CAD tool or a slicer opens.

3D designs become a closed surface (STL, 3MF, OBJ, PLY); 2D designs become closed
outlines (DXF, SVG) or, for the surface formats, an extruded solid. Cells that must stay
in the part (passive solid regions, cells touching loads and point supports: see
:func:`femopt.io.results.kept_cells`) are set solid before contouring. Every surface is
checked watertight and consistently oriented before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from femopt.errors import InputError, RunError
from femopt.io.exporter import Exporter
from femopt.plugins.registry import Options


class CadOptions(Options):
    threshold: float = Field(0.5, gt=0, lt=1)
    """Density at which the part's boundary is drawn."""
    smooth: int = Field(10, ge=0)
    """Taubin smoothing iterations (0: none)."""
    thickness: float | None = Field(None, gt=0)
    """Extrusion thickness of a 2D design (default: the physics' thickness)."""


@dataclass
class Part:
    """The exported solid: a closed surface (3D, or a 2D design extruded) and, for 2D
    designs, the outlines (and their triangles when extruded)."""

    dim: int
    unit: str
    surface: Any = None  # trimesh.Trimesh
    loops: list[np.ndarray] = field(default_factory=list)
    points2d: np.ndarray | None = None
    triangles: np.ndarray | None = None
    thickness: float = 1.0
    volume: float = 0.0  # of the part (area times thickness in 2D)
    thresholded_volume: float = 0.0  # cells above the threshold times the cell volume
    dropped_bodies: int = 0
    cell_size: float = 1.0  # the design grid's largest spacing

    def info(self) -> dict[str, Any]:
        out = {"dim": self.dim, "unit": self.unit, "volume": self.volume,
               "thresholded_volume": self.thresholded_volume,
               "volume_error": self.volume / self.thresholded_volume - 1.0,
               "dropped_bodies": self.dropped_bodies}
        if self.surface is not None:
            out.update(vertices=len(self.surface.vertices), faces=len(self.surface.faces))
        if self.dim == 2:
            out.update(outlines=len(self.loops), thickness=self.thickness)
        return out


def grid_field(result, threshold: float) -> tuple[np.ndarray, Any]:
    """The densities as an (nx, ny[, nz]) array with kept cells set solid. A design on
    an unstructured mesh is resampled onto a regular grid first."""
    mesh = result.mesh
    rho = np.array(result.cell_data["density"], dtype=float)
    if result.solid is not None:
        rho[result.solid] = 1.0
    if mesh.grid is None:
        from femopt.io.resample import resample, sample_grid

        grid = sample_grid(mesh)
        return resample(mesh, rho, grid), grid
    shape = mesh.grid.shape
    return rho.reshape(shape[::-1]).T, mesh.grid  # cells are numbered x fastest


def build_part(result, options: CadOptions, extrude_2d: bool = True) -> Part:
    """Contour the design into a :class:`Part`; RunError when the surface is not closed.
    A 2D design is triangulated and extruded when ``extrude_2d``."""
    from femopt.io.contour import density_contours, extrude, signed_area, triangulate
    from femopt.io.surface import check_surface, density_surface

    field_, grid = grid_field(result, options.threshold)
    cell_volume = float(np.prod(grid.spacing))
    solid_cells = int(np.count_nonzero(field_ > options.threshold))
    part = Part(dim=field_.ndim, unit=result.unit, cell_size=float(max(grid.spacing)))
    try:
        if field_.ndim == 3:
            part.surface, part.dropped_bodies = density_surface(
                field_, grid.spacing, grid.origin, options.threshold, options.smooth)
            part.thresholded_volume = solid_cells * cell_volume
        else:
            part.thickness = options.thickness or result.thickness
            part.loops = density_contours(field_, grid.spacing, grid.origin,
                                          options.threshold, options.smooth)
            part.thresholded_volume = solid_cells * cell_volume * part.thickness
            if extrude_2d:
                part.points2d, part.triangles = triangulate(part.loops)
                part.surface = extrude(part.points2d, part.triangles, part.thickness)
    except ValueError as exc:
        raise RunError(f"cannot export the design: {exc}") from None
    if part.surface is not None:
        check = check_surface(np.asarray(part.surface.vertices),
                              np.asarray(part.surface.faces))
        if not check.watertight:
            raise RunError(f"the exported surface is not a closed, consistently oriented "
                           f"solid: {check.describe()}")
        part.volume = check.volume
    else:
        part.volume = sum(signed_area(p) for p in part.loops) * part.thickness
    return part


class _SurfaceExporter(Exporter):
    """Writes the part's closed surface (3D, or a 2D design extruded)."""

    Options = CadOptions

    def export(self, result, path: Path) -> dict[str, Any]:
        part = build_part(result, self.options)
        self.write(part, Path(path))
        return part.info()

    def write(self, part: Part, path: Path) -> None:
        part.surface.export(str(path), file_type=self.suffix[1:])


class StlExporter(_SurfaceExporter):
    name = "stl"
    summary = "Binary STL of the part's closed surface (2D designs extruded)"
    suffix = ".stl"


class ObjExporter(_SurfaceExporter):
    name = "obj"
    summary = "Wavefront OBJ of the part's closed surface (2D designs extruded)"
    suffix = ".obj"


class PlyExporter(_SurfaceExporter):
    name = "ply"
    summary = "Binary PLY of the part's closed surface (2D designs extruded)"
    suffix = ".ply"


class ThreeMfExporter(_SurfaceExporter):
    name = "3mf"
    summary = "3MF package of the part's closed surface, with the problem's unit"
    suffix = ".3mf"

    def write(self, part: Part, path: Path) -> None:
        from femopt.io.surface import write_3mf

        write_3mf(path, np.asarray(part.surface.vertices), np.asarray(part.surface.faces),
                  part.unit)


class _OutlineExporter(Exporter):
    """Writes the closed outlines of a 2D design."""

    Options = CadOptions

    @classmethod
    def refusal(cls, mesh) -> str | None:
        if mesh.dim == 2:
            return None
        return (f"format {cls.name} draws the outlines of a 2D design; this design is 3D "
                f"(use stl, 3mf, obj or ply)")

    def export(self, result, path: Path) -> dict[str, Any]:
        if (why := self.refusal(result.mesh)) is not None:
            raise InputError(why)
        part = build_part(result, self.options, extrude_2d=False)
        self.write(part, Path(path))
        return part.info()


class DxfExporter(_OutlineExporter):
    name = "dxf"
    summary = "DXF drawing of a 2D design's closed outlines (LWPOLYLINE), with its unit"
    suffix = ".dxf"

    def write(self, part: Part, path: Path) -> None:
        from femopt.io.contour import write_dxf

        write_dxf(path, part.loops, part.unit)


class SvgExporter(_OutlineExporter):
    name = "svg"
    summary = "SVG drawing of a 2D design's closed outlines at true size"
    suffix = ".svg"

    def write(self, part: Part, path: Path) -> None:
        from femopt.io.contour import write_svg

        write_svg(path, part.loops, part.unit)


CAD_EXPORTERS = (StlExporter, ThreeMfExporter, ObjExporter, PlyExporter, DxfExporter,
                 SvgExporter)
