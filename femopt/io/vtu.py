"""The design as VTU: densities as cell data, the states as point data; and the appended
raw layout every VTK XML file femopt writes shares (:func:`write_appended`, used by
:mod:`femopt.io.vti` too).

Written by femopt itself (meshio reads it back): binary data appended raw after the XML,
each array behind a 64-bit byte count (``header_type="UInt64"``), so no array or offset
overflows at any size (a 32-bit count ends at 4 GiB: 550M hex8 cells' connectivity is
35 GB). Every array of the file, the mesh's too, is a
:class:`~femopt.backend.rows.RowSource` of the type written, read :data:`CHUNK_BYTES` at
a time (:meth:`~femopt.backend.rows.RowSource.slabs`): a field kept on the device is asked
for one chunk of rows at a time, a host array's slices are converted (to a type VTK has,
a 2D vector padded to 3 components) chunk by chunk, the mesh's rows are made per chunk.
So the writer holds no copy of the mesh or of a field. Large designs are written
uncompressed; small ones are zlib-compressed in 32 KiB blocks, chunk by chunk too.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from femopt.backend.rows import RowSource, cell_rows
from femopt.mesh.mesh import Mesh

COMPRESS_UP_TO = 1_000_000  # cells; larger designs are written uncompressed (binary)
CHUNK_BYTES = 16 << 20  # what one write takes at most (and the rows a chunk makes)
ZLIB_BLOCK = 32768
# the narrowest type a design's field is written in (float32): what a size bound counts
FIELD_BYTES = 4
VTK_CELL = {"quad4": 9, "hex8": 12, "tri3": 5, "tet4": 10}
VTK_TYPE = {np.dtype(np.float64): "Float64", np.dtype(np.float32): "Float32",
            np.dtype(np.int64): "Int64", np.dtype(np.int32): "Int32",
            np.dtype(np.uint8): "UInt8", np.dtype(np.int8): "Int8"}

Sections = list[tuple[str, list[tuple[str, RowSource]]]]


def _vtk_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` where VTK has it, else float64 or int64."""
    dtype = np.dtype(dtype)
    if dtype in VTK_TYPE:
        return dtype
    return np.dtype(np.float64 if dtype.kind == "f" else np.int64)


def _components(field: RowSource) -> int:
    return 1 if field.ndim == 1 else field.shape[1]


def _written(a: np.ndarray | RowSource, dtype: np.dtype, pad: bool = False) -> RowSource:
    """The field ``a`` (a host array, or a :class:`RowSource` kept on the device) as the
    rows the file holds: converted to ``dtype`` and, with ``pad``, given a zero third
    component, one chunk of rows at a time (no converted copy of the whole field)."""
    src = a if isinstance(a, RowSource) else cell_rows(np.asarray(a))

    def rows(i: int, j: int) -> np.ndarray:
        block = src.rows(i, j)
        if pad:
            block = np.column_stack([block, np.zeros(j - i)])
        return np.ascontiguousarray(block, dtype=dtype)

    return RowSource((src.shape[0], 3) if pad else src.shape, dtype, rows)


def cell_field(a: np.ndarray | RowSource) -> RowSource:
    """A cell field as written: VTK's dtype for it."""
    if not isinstance(a, RowSource):
        a = np.asarray(a)
    return _written(a, _vtk_dtype(a.dtype))


def point_field(v: np.ndarray | RowSource) -> RowSource:
    """A point field as written: VTK's dtype, a 2D vector padded to 3 components."""
    if not isinstance(v, RowSource):
        v = np.asarray(v)
    if v.ndim == 2 and v.shape[1] == 2:  # 2D vectors padded: ParaView warps by 3 components
        return _written(v, v.dtype if v.dtype in VTK_TYPE else np.float64, pad=True)
    return cell_field(v)


def _points(mesh: Mesh) -> RowSource:
    """The node coordinates by rows (a structured grid computes them per chunk), padded
    to 3 components in 2D."""
    def rows(i, j):
        pts = np.asarray(mesh.point_rows(i, j), dtype=np.float64)
        return pts if mesh.dim == 3 else np.column_stack([pts, np.zeros(j - i)])

    return RowSource((mesh.n_nodes, 3), np.float64, rows)


def _chunks(field: RowSource):
    """The bytes of ``field``'s rows, :data:`CHUNK_BYTES` at most at a time."""
    for block in field.slabs(CHUNK_BYTES):
        yield memoryview(np.ascontiguousarray(block, dtype=field.dtype)).cast("B")


def _compressed(field: RowSource) -> list[bytes]:
    """The UInt64 block header and the zlib blocks of ``field`` (a small array),
    compressed chunk by chunk: only the compressed blocks are held whole."""
    blocks, rest = [], b""
    for chunk in _chunks(field):
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


def write_appended(path: str | Path, dataset: str, attributes: str, piece: str,
                   sections: Sections, compress: bool,
                   field_data: dict[str, np.ndarray] | None = None) -> None:
    """Write a VTK XML file of type ``dataset`` (its element's ``attributes``, one
    ``<Piece {piece}>``) whose ``sections`` (tag, [(name, field)]) hold every array as
    appended raw data behind a UInt64 byte count, zlib-compressed with ``compress``.
    ``field_data`` (small arrays, :func:`labels`) is written as text."""
    payload: dict[tuple[str, int], list[bytes]] = {}
    offset = 0
    xml = ['<?xml version="1.0"?>',
           f'<VTKFile type="{dataset}" version="1.0" byte_order="LittleEndian" '
           'header_type="UInt64"' + (' compressor="vtkZLibDataCompressor"' if compress
                                     else "") + ">",
           f"<{dataset}{' ' + attributes if attributes else ''}>"]
    if field_data:
        xml.append("<FieldData>")
        for name, v in field_data.items():
            v = np.asarray(v).reshape(-1)
            xml.append(f'<DataArray type="{VTK_TYPE[v.dtype]}" Name={quoteattr(name)} '
                       f'NumberOfTuples="{v.size}" format="ascii">'
                       f'{" ".join(repr(x) for x in v.tolist())}</DataArray>')
        xml.append("</FieldData>")
    xml.append(f"<Piece {piece}>")
    for tag, arrays in sections:
        xml.append(f"<{tag}>")
        for i, (name, field) in enumerate(arrays):
            if compress:
                payload[tag, i] = _compressed(field)
                size = sum(len(b) for b in payload[tag, i])
            else:
                size = 8 + field.nbytes
            ncomp = _components(field)
            comps = f'NumberOfComponents="{ncomp}" ' if ncomp > 1 else ""
            xml.append(f'<DataArray type="{VTK_TYPE[field.dtype]}" Name={quoteattr(name)} '
                       f'{comps}format="appended" offset="{offset}"/>')
            offset += size
        xml.append(f"</{tag}>")
    xml += ["</Piece>", f"</{dataset}>", '<AppendedData encoding="raw">']
    with open(path, "wb") as f:
        f.write(("\n".join(xml) + "\n_").encode())
        for tag, arrays in sections:
            for i, (_, field) in enumerate(arrays):
                if compress:
                    for b in payload.pop((tag, i)):
                        f.write(b)
                    continue
                f.write(np.uint64(field.nbytes).tobytes())
                for chunk in _chunks(field):
                    f.write(chunk)
        f.write(b"\n</AppendedData>\n</VTKFile>\n")


def field_bytes(n_cells: int, n_nodes: int, cell_values: int, point_values: int) -> int:
    """A lower bound of the bytes of uncompressed fields: ``cell_values`` values per cell
    and ``point_values`` per node (2D vectors counted padded), :data:`FIELD_BYTES` each."""
    return FIELD_BYTES * (cell_values * n_cells + point_values * n_nodes)


def vtu_bytes(mesh: Mesh, cell_values: int, point_values: int) -> int:
    """A lower bound of the size of :func:`write_vtu`'s file (fields as
    :func:`field_bytes`); 0 for a design written compressed, whose size is not known
    before it is written."""
    n, m = mesh.n_cells, mesh.n_nodes
    if n <= COMPRESS_UP_TO:
        return 0
    # points (3 float64), connectivity and offsets (int64), types (uint8)
    return 24 * m + (8 * mesh.nodes_per_cell + 9) * n + field_bytes(n, m, cell_values,
                                                                      point_values)


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

    conn = RowSource((n * k,), np.int64, connectivity)
    offsets = RowSource((n,), np.int64,
                        lambda i, j: np.arange(i + 1, j + 1, dtype=np.int64) * k)
    vtk_type = VTK_CELL[mesh.cell_type]
    types = RowSource((n,), np.uint8, lambda i, j: np.full(j - i, vtk_type, dtype=np.uint8))
    sections = [("Points", [("Points", _points(mesh))]),
                ("Cells", [("connectivity", conn), ("offsets", offsets), ("types", types)]),
                ("PointData", [(name, point_field(v)) for name, v in point_data.items()]),
                ("CellData", [(name, cell_field(v)) for name, v in cell_data.items()])]
    # zlib runs at about 150 MB/s on one core: a 33M-cell grid would take minutes
    write_appended(path, "UnstructuredGrid", "",
                   f'NumberOfPoints="{mesh.n_nodes}" NumberOfCells="{n}"', sections,
                   n <= COMPRESS_UP_TO, field_data)
