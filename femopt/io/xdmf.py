"""XDMF 3 text of femopt's meshes over HDF5 arrays: one writer for the design history
(``series.xdmf``, a temporal collection) and a distributed run's final design
(``design.xdmf``, one grid), on one process or over the ranks' pieces.

The mesh is always at ``H5:/mesh/cells`` (64-bit corner ids) and ``H5:/mesh/points``
(float64); a cell array at ``H5:/NAME``. The text only points into the HDF5 file: it is
written after the arrays it names.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

QUOTE = {'"': "&quot;"}
XDMF_CELL = {"quad4": "Quadrilateral", "hex8": "Hexahedron", "tri3": "Triangle",
             "tet4": "Tetrahedron"}

_HEAD = '<?xml version="1.0" ?>\n<Xdmf Version="3.0">\n<Domain>\n'
_TAIL = "</Domain>\n</Xdmf>\n"


def mesh_items(mesh: Any, h5: str) -> tuple[str, str]:
    """The ``<Topology>`` and ``<Geometry>`` elements of ``mesh``'s arrays in ``h5``."""
    n_cells, n_pts, dim = mesh.n_cells, mesh.n_nodes, mesh.dim
    topology = (f'<Topology TopologyType="{XDMF_CELL[mesh.cell_type]}" '
                f'NumberOfElements="{n_cells}">'
                f'<DataItem Dimensions="{n_cells} {mesh.nodes_per_cell}" NumberType="Int" '
                f'Precision="8" Format="HDF">{h5}:/mesh/cells</DataItem></Topology>')
    geometry = (f'<Geometry GeometryType="{"XY" if dim == 2 else "XYZ"}">'
                f'<DataItem Dimensions="{n_pts} {dim}" NumberType="Float" Precision="8" '
                f'Format="HDF">{h5}:/mesh/points</DataItem></Geometry>')
    return topology, geometry


def cell_attribute(name: str, n_cells: int, location: str) -> str:
    """An ``<Attribute>`` of one float64 per cell called ``name``, at ``location``
    (``H5:/PATH``)."""
    return (f'<Attribute Name="{escape(name, QUOTE)}" AttributeType="Scalar" '
            f'Center="Cell"><DataItem Dimensions="{n_cells}" NumberType="Float" '
            f'Precision="8" Format="HDF">{location}</DataItem></Attribute>')


def series_xdmf(mesh: Any, h5: str, steps: list[int], info: dict[str, str]) -> str:
    """The design history: a temporal collection of one grid per step (its densities at
    ``h5:/density/NNNNNN``), after ``info``'s name -> text items."""
    topology, geometry = mesh_items(mesh, h5)
    grids = "\n".join(
        f'<Grid Name="iteration {it}" GridType="Uniform"><Time Value="{it}"/>'
        f"{topology}{geometry}"
        f"{cell_attribute('density', mesh.n_cells, f'{h5}:/density/{it:06d}')}</Grid>"
        for it in steps)
    items = "".join(f'<Information Name="{escape(k, QUOTE)}" Value="{escape(v, QUOTE)}"/>\n'
                    for k, v in info.items())
    return (_HEAD + items
            + '<Grid Name="design" GridType="Collection" CollectionType="Temporal">\n'
            + grids + "\n</Grid>\n" + _TAIL)


def design_xdmf(mesh: Any, h5: str, cell_data: list[str]) -> str:
    """One grid: the mesh and the cell arrays ``cell_data`` at ``h5:/NAME``. The domain
    holds the grid alone (meshio reads no more)."""
    topology, geometry = mesh_items(mesh, h5)
    attrs = "".join(cell_attribute(n, mesh.n_cells, f"{h5}:/{n}") + "\n" for n in cell_data)
    return (_HEAD + '<Grid Name="design" GridType="Uniform">\n'
            + topology + "\n" + geometry + "\n" + attrs + "</Grid>\n" + _TAIL)
