"""The design as VTU (meshio): densities as cell data, the states as point data."""

from __future__ import annotations

from pathlib import Path

import meshio
import numpy as np

from femopt.mesh.mesh import Mesh

COMPRESS_UP_TO = 1_000_000  # cells; larger designs are written uncompressed (binary)
MESHIO_CELL = {"quad4": "quad", "hex8": "hexahedron", "tri3": "triangle", "tet4": "tetra"}


def write_vtu(path: str | Path, mesh: Mesh, cell_data: dict[str, np.ndarray],
              point_data: dict[str, np.ndarray]) -> None:
    """Write ``mesh`` with the given fields; 2D vectors are padded to 3 components so that
    ParaView can warp by them."""
    pts = mesh.points
    if mesh.dim == 2:
        pts = np.column_stack([pts, np.zeros(len(pts))])
    pdata = {}
    for name, v in point_data.items():
        v = np.asarray(v)
        if v.ndim == 2 and v.shape[1] == 2:
            v = np.column_stack([v, np.zeros(len(v))])
        pdata[name] = v
    out = meshio.Mesh(pts, [(MESHIO_CELL[mesh.cell_type], mesh.cells)], point_data=pdata,
                      cell_data={k: [np.asarray(v)] for k, v in cell_data.items()})
    # zlib runs at about 150 MB/s on one core: a 33M-cell grid would take minutes
    compression = "zlib" if mesh.n_cells <= COMPRESS_UP_TO else None
    out.write(str(path), file_format="vtu", compression=compression)
