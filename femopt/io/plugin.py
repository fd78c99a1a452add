"""Built-in exporters."""

from __future__ import annotations

from pathlib import Path

from femopt.io.cad import CAD_EXPORTERS
from femopt.io.exporter import Exporter
from femopt.io.vtu import labels, write_vtu
from femopt.plugins.manager import hookimpl
from femopt.plugins.registry import Options


class VtuOptions(Options):
    pass


class VtuExporter(Exporter):
    name = "vtu"
    summary = "VTK unstructured grid: densities (cell data) and states (point data)"
    Options = VtuOptions
    suffix = ".vtu"

    def export(self, result, path: Path) -> None:
        write_vtu(path, result.mesh, result.cell_data, result.point_data,
                  labels(result.name, result.unit))


@hookimpl
def femopt_register_exporters(registry) -> None:
    registry.add("exporter", VtuExporter)
    for cls in CAD_EXPORTERS:
        registry.add("exporter", cls)
