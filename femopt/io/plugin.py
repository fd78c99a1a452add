"""Built-in exporters."""

from __future__ import annotations

from pathlib import Path

from femopt.errors import InputError
from femopt.io.cad import CAD_EXPORTERS
from femopt.io.exporter import Exporter
from femopt.io.vti import vti_bytes, write_vti
from femopt.io.vtu import labels, vtu_bytes, write_vtu
from femopt.plugins.manager import hookimpl
from femopt.plugins.registry import Options


class VtuOptions(Options):
    pass


class VtuExporter(Exporter):
    name = "vtu"
    summary = "VTK unstructured grid: densities (cell data) and states (point data)"
    Options = VtuOptions
    suffix = ".vtu"

    @classmethod
    def size_bound(cls, mesh, cell_values: int, point_values: int) -> int:
        return vtu_bytes(mesh, cell_values, point_values)

    def export(self, result, path: Path) -> None:
        write_vtu(path, result.mesh, result.cell_data, result.point_data,
                  labels(result.name, result.unit))


class VtiOptions(Options):
    pass


class VtiExporter(Exporter):
    name = "vti"
    summary = ("VTK image data of a structured grid: densities (cell data) and states "
               "(point data), without points or cells")
    Options = VtiOptions
    suffix = ".vti"

    @classmethod
    def refusal(cls, mesh) -> str | None:
        if mesh.grid is not None:
            return None
        return (f"format vti writes VTK image data, which needs a structured grid (mesh: "
                f"{{type: structured}}); this mesh of {mesh.cell_type} cells is not one "
                f"(format vtu writes any mesh)")

    @classmethod
    def size_bound(cls, mesh, cell_values: int, point_values: int) -> int:
        return 0 if mesh.grid is None else vti_bytes(mesh.grid, cell_values, point_values)

    def export(self, result, path: Path) -> None:
        if (why := self.refusal(result.mesh)) is not None:
            raise InputError(why)
        write_vti(path, result.mesh.grid, result.cell_data, result.point_data,
                  labels(result.name, result.unit))


@hookimpl
def femopt_register_exporters(registry) -> None:
    registry.add("exporter", VtuExporter)
    registry.add("exporter", VtiExporter)
    for cls in CAD_EXPORTERS:
        registry.add("exporter", cls)
