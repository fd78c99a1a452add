"""The design as VTU: densities as cell data, the states as point data.

Written by femopt itself (meshio reads it back): binary data appended raw after the XML,
each array behind a 64-bit byte count (``header_type="UInt64"``), so no array or offset
overflows at any size (a 32-bit count ends at 4 GiB: 550M hex8 cells' connectivity is
35 GB). Large designs are written uncompressed, in chunks of :data:`CHUNK_BYTES`, so the
writer holds no copy of the mesh, nor of a field given as a
:class:`~femopt.backend.rows.RowSource` (kept on the device: asked for one chunk of rows
at a time); small ones are zlib-compressed in 32 KiB blocks.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import quoteattr

import numpy as np

from femopt.backend.rows import RowSource
from femopt.mesh.mesh import Mesh

COMPRESS_UP_TO = 1_000_000  # cells; larger designs are written uncompressed (binary)
CHUNK_BYTES = 16 << 20  # what one write takes at most (and the rows a chunk makes)
ZLIB_BLOCK = 32768
VTK_CELL = {"quad4": 9, "hex8": 12, "tri3": 5, "tet4": 10}
VTK_TYPE = {np.dtype(np.float64): "Float64", np.dtype(np.float32): "Float32",
            np.dtype(np.int64): "Int64", np.dtype(np.int32): "Int32",
            np.dtype(np.uint8): "UInt8", np.dtype(np.int8): "Int8"}


class _Array:
    """One DataArray: ``rows(start, stop)`` gives its rows (tuples) in that range."""

    def __init__(self, name: str, dtype: np.dtype, n: int, ncomp: int,
                 rows: Callable[[int, int], np.ndarray]):
        self.name, self.dtype, self.n, self.ncomp, self.rows = name, np.dtype(dtype), n, \
            ncomp, rows

    @property
    def nbytes(self) -> int:
        return self.n * self.ncomp * self.dtype.itemsize

    def chunks(self):
        per = max(1, CHUNK_BYTES // max(1, self.ncomp * self.dtype.itemsize))
        for start in range(0, self.n, per):
            block = np.ascontiguousarray(self.rows(start, min(self.n, start + per)),
                                         dtype=self.dtype)
            yield memoryview(block).cast("B")


def _vtk_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` where VTK has it, else float64 or int64."""
    dtype = np.dtype(dtype)
    if dtype in VTK_TYPE:
        return dtype
    return np.dtype(np.float64 if dtype.kind == "f" else np.int64)


def _of(name: str, a: np.ndarray | RowSource) -> _Array:
    """A field by rows: a host array, or a :class:`RowSource` asked for one chunk of
    rows at a time (a field kept on the device)."""
    if isinstance(a, RowSource):
        return _Array(name, _vtk_dtype(a.dtype), a.shape[0], 1 if a.ndim == 1 else a.shape[1],
                      a.rows)
    a = np.asarray(a)
    if a.dtype not in VTK_TYPE:
        a = a.astype(_vtk_dtype(a.dtype))
    ncomp = 1 if a.ndim == 1 else a.shape[1]
    return _Array(name, a.dtype, a.shape[0], ncomp, lambda i, j: a[i:j])


def _points(mesh: Mesh) -> _Array:
    """The node coordinates by rows (a structured grid computes them per chunk), padded
    to 3 components in 2D."""
    def rows(i, j):
        pts = np.asarray(mesh.point_rows(i, j), dtype=np.float64)
        return pts if mesh.dim == 3 else np.column_stack([pts, np.zeros(j - i)])

    return _Array("Points", np.float64, mesh.n_nodes, 3, rows)


def _point_field(name: str, v: np.ndarray | RowSource) -> _Array:
    if not isinstance(v, RowSource):
        v = np.asarray(v)
    if v.ndim == 2 and v.shape[1] == 2:  # 2D vectors padded: ParaView warps by 3 components
        rows = v.rows if isinstance(v, RowSource) else lambda i, j: v[i:j]
        return _Array(name, v.dtype if v.dtype in VTK_TYPE else np.float64, v.shape[0], 3,
                      lambda i, j: np.column_stack([rows(i, j), np.zeros(j - i)]))
    return _of(name, v)


def _compressed(arr: _Array) -> list[bytes]:
    """The UInt64 block header and the zlib blocks of ``arr`` (a small array), compressed
    chunk by chunk: only the compressed blocks are held whole."""
    blocks, rest = [], b""
    for chunk in arr.chunks():
        data = rest + bytes(chunk)
        whole = len(data) - len(data) % ZLIB_BLOCK
        blocks += [zlib.compress(data[i:i + ZLIB_BLOCK]) for i in range(0, whole, ZLIB_BLOCK)]
        rest = data[whole:]
    if rest:
        blocks.append(zlib.compress(rest))
    last = len(rest) if rest else (ZLIB_BLOCK if blocks else 0)
    header = np.array([len(blocks), ZLIB_BLOCK, last] + [len(b) for b in blocks], np.uint64)
    return [header.tobytes()] + blocks


def labels(name: str, unit: str) -> dict[str, np.ndarray]:
    """Field data naming a result: the problem's ``name`` and length ``unit`` as UTF-8
    bytes (``bytes(a).decode()`` reads them back; a VTK string array would stop meshio
    from reading the file) and ``meters_per_unit``."""
    from femopt.mesh.meshfile import UNITS

    return {"problem": np.frombuffer(name.encode(), dtype=np.uint8),
            "unit": np.frombuffer(unit.encode(), dtype=np.uint8),
            "meters_per_unit": np.array([UNITS.get(unit, np.nan)])}


def write_vtu(path: str | Path, mesh: Mesh, cell_data: dict[str, np.ndarray],
              point_data: dict[str, np.ndarray],
              field_data: dict[str, np.ndarray] | None = None) -> None:
    """Write ``mesh`` with the given fields (host arrays, or :class:`RowSource` fields
    read by chunks of rows); 2D vectors are padded to 3 components so that ParaView can
    warp by them. ``field_data`` (small arrays, :func:`labels`) is written as text."""
    n, k = mesh.n_cells, mesh.nodes_per_cell

    def connectivity(i, j):  # flat entries i..j-1, from the cells that hold them
        first, last = i // k, -(-j // k)
        flat = np.asarray(mesh.cell_rows(first, last), dtype=np.int64).reshape(-1)
        return flat[i - first * k:j - first * k]

    conn = _Array("connectivity", np.int64, n * k, 1, connectivity)
    offsets = _Array("offsets", np.int64, n, 1,
                     lambda i, j: np.arange(i + 1, j + 1, dtype=np.int64) * k)
    vtk_type = VTK_CELL[mesh.cell_type]
    types = _Array("types", np.uint8, n, 1,
                   lambda i, j: np.full(j - i, vtk_type, dtype=np.uint8))
    pdata = [_point_field(name, v) for name, v in point_data.items()]
    cdata = [_of(name, v) for name, v in cell_data.items()]
    # zlib runs at about 150 MB/s on one core: a 33M-cell grid would take minutes
    compress = n <= COMPRESS_UP_TO
    sections = [("Points", [_points(mesh)]), ("Cells", [conn, offsets, types]),
                ("PointData", pdata), ("CellData", cdata)]
    payload: dict[int, list[bytes]] = {}
    offset = 0
    xml = ['<?xml version="1.0"?>',
           '<VTKFile type="UnstructuredGrid" version="1.0" byte_order="LittleEndian" '
           'header_type="UInt64"' + (' compressor="vtkZLibDataCompressor"' if compress
                                     else "") + ">",
           "<UnstructuredGrid>"]
    if field_data:
        xml.append("<FieldData>")
        for name, v in field_data.items():
            v = np.asarray(v).reshape(-1)
            xml.append(f'<DataArray type="{VTK_TYPE[v.dtype]}" Name={quoteattr(name)} '
                       f'NumberOfTuples="{v.size}" format="ascii">'
                       f'{" ".join(repr(x) for x in v.tolist())}</DataArray>')
        xml.append("</FieldData>")
    xml.append(f'<Piece NumberOfPoints="{mesh.n_nodes}" NumberOfCells="{n}">')
    for tag, arrays in sections:
        xml.append(f"<{tag}>")
        for arr in arrays:
            if compress:
                payload[id(arr)] = _compressed(arr)
                size = sum(len(b) for b in payload[id(arr)])
            else:
                size = 8 + arr.nbytes
            comps = f'NumberOfComponents="{arr.ncomp}" ' if arr.ncomp > 1 else ""
            xml.append(f'<DataArray type="{VTK_TYPE[arr.dtype]}" Name={quoteattr(arr.name)} '
                       f'{comps}format="appended" offset="{offset}"/>')
            offset += size
        xml.append(f"</{tag}>")
    xml += ["</Piece>", "</UnstructuredGrid>", '<AppendedData encoding="raw">']
    with open(path, "wb") as f:
        f.write(("\n".join(xml) + "\n_").encode())
        for _, arrays in sections:
            for arr in arrays:
                if compress:
                    for b in payload.pop(id(arr)):
                        f.write(b)
                    continue
                f.write(np.uint64(arr.nbytes).tobytes())
                for chunk in arr.chunks():
                    f.write(chunk)
        f.write(b"\n</AppendedData>\n</VTKFile>\n")
