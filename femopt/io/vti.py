"""The design of a structured grid as VTK XML image data (``design.vti``): the grid is its
extent, origin and spacing, so the file holds no points and no connectivity, only the
fields: densities as cell data, the states as point data.

The layout is the VTU's (:func:`femopt.io.vtu.write_appended`): appended raw binary, each
array behind a UInt64 byte count, every field read by chunks of rows from its
:class:`~femopt.backend.rows.RowSource` (no host copy of a field), zlib-compressed up to
:data:`femopt.io.vtu.COMPRESS_UP_TO` cells. A femopt grid numbers its cells and nodes x
fastest, then y, then z, as VTK's image data does: the fields are written in their own
order. A 2D grid is an image of z extent 0 (its vectors padded to 3 components).
:func:`read_vti` reads such a file back.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from femopt.backend.rows import RowSource
from femopt.errors import InputError
from femopt.io import vtu
from femopt.mesh.mesh import StructuredGrid

MARK = b'<AppendedData encoding="raw">'
HEAD_LIMIT = 16 << 20  # bytes of XML read before the appended data, at most
ZLIB = "vtkZLibDataCompressor"
DTYPES = {name: dtype.newbyteorder("<") for dtype, name in vtu.VTK_TYPE.items()}


def _numbers(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def image_attributes(grid: StructuredGrid) -> tuple[str, str]:
    """The ``<ImageData>`` element's attributes and its piece's extent for ``grid``: a 2D
    grid has the z extent 0 0, origin 0 and spacing 1 in z."""
    dim = len(grid.shape)
    extent = " ".join(f"0 {n}" for n in (*grid.shape, 0)[:3])
    origin = (*grid.origin, 0.0)[:3]
    spacing = (*grid.spacing, 1.0)[:3] if dim == 2 else grid.spacing
    return (f'WholeExtent="{extent}" Origin="{_numbers(origin)}" '
            f'Spacing="{_numbers(spacing)}"', f'Extent="{extent}"')


def write_vti(path: str | Path, grid: StructuredGrid,
              cell_data: dict[str, np.ndarray | RowSource],
              point_data: dict[str, np.ndarray | RowSource],
              field_data: dict[str, np.ndarray] | None = None) -> None:
    """Write the fields of a design on ``grid`` (host arrays, or :class:`RowSource` fields
    read by chunks of rows, in the grid's order); 2D vectors are padded to 3 components.
    ``field_data`` (small arrays, :func:`femopt.io.vtu.labels`) is written as text.

    Raises:
        ValueError: a field whose row count is not the grid's cells (cell data) or
            nodes (point data).
    """
    n_cells = int(np.prod(grid.shape))
    n_nodes = int(np.prod(grid.node_shape))
    cells = [(name, vtu.cell_field(v)) for name, v in cell_data.items()]
    points = [(name, vtu.point_field(v)) for name, v in point_data.items()]
    for (name, f), n, what in [(c, n_cells, "cells") for c in cells] + \
            [(p, n_nodes, "nodes") for p in points]:
        if f.shape[0] != n:
            raise ValueError(f"field {name!r} has {f.shape[0]} rows; the grid has {n} {what}")
    attributes, piece = image_attributes(grid)
    vtu.write_appended(path, "ImageData", attributes, piece,
                       [("PointData", points), ("CellData", cells)],
                       n_cells <= vtu.COMPRESS_UP_TO, field_data)


def vti_bytes(grid: StructuredGrid, cell_values: int, point_values: int) -> int:
    """A lower bound of the size of :func:`write_vti`'s file (its fields, as
    :func:`femopt.io.vtu.field_bytes`); 0 for a design written compressed."""
    n_cells = int(np.prod(grid.shape))
    if n_cells <= vtu.COMPRESS_UP_TO:
        return 0
    return vtu.field_bytes(n_cells, int(np.prod(grid.node_shape)), cell_values,
                           point_values)


@dataclass
class ImageData:
    """A ``.vti`` file read back: ``extent`` (x0, x1, y0, y1, z0, z1) in nodes, ``origin``
    and ``spacing`` (3 each), the arrays by name (an array of several components as
    (n, components)), numbered x fastest, then y, then z."""

    extent: tuple[int, ...]
    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    cell_data: dict[str, np.ndarray] = field(default_factory=dict)
    point_data: dict[str, np.ndarray] = field(default_factory=dict)
    field_data: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Cells per axis (a flat axis counts one cell)."""
        e = self.extent
        return tuple(max(1, e[2 * a + 1] - e[2 * a]) for a in range(3))

    @property
    def node_shape(self) -> tuple[int, int, int]:
        e = self.extent
        return tuple(e[2 * a + 1] - e[2 * a] + 1 for a in range(3))


def _head(f, path: Path) -> tuple[bytes, int]:
    """The XML before the appended data and the file offset of the data's first byte."""
    head = b""
    while True:
        block = f.read(1 << 16)
        head += block
        at = head.find(MARK)
        under = head.find(b"_", at + len(MARK)) if at >= 0 else -1
        if under >= 0:
            return head[:at], under + 1
        if not block or len(head) > HEAD_LIMIT:
            raise InputError(f"{path}: not a VTK XML file with appended raw data")


def _values(path: Path, element, name: str, kind: type, count: int,
            default: str | None = None) -> tuple:
    """``count`` numbers of type ``kind`` from the attribute ``name`` of ``element``."""
    text = element.get(name, default)
    if text is None:
        raise InputError(f"{path}: <{element.tag}> has no {name} attribute")
    try:
        values = tuple(kind(v) for v in text.split())
    except ValueError:
        values = ()
    if len(values) != count:
        raise InputError(f"{path}: <{element.tag}> {name}={text!r}: {count} "
                         f"{kind.__name__} value(s) expected")
    return values


def _within(f, n: int, end: int, path: Path, name: str) -> None:
    """Refuse to read ``n`` bytes of ``f``, whose data ends at byte ``end``, past it."""
    if n < 0 or f.tell() + n > end:
        raise InputError(f"{path}: array {name!r}: the file ends before its data does "
                         "(truncated?)")


def _take(f, n: int, end: int, path: Path, name: str) -> bytes:
    """The next ``n`` bytes of ``f``, whose data ends at byte ``end``."""
    _within(f, n, end, path, name)
    return f.read(n)


def _array(f, path: Path, base: int, end: int, element, compressed: bool,
           rows: int) -> np.ndarray:
    name = element.get("Name")
    dtype = DTYPES.get(element.get("type"))
    if dtype is None or element.get("format") != "appended":
        raise InputError(f"{path}: array {name!r}: femopt reads appended arrays of types "
                         f"{', '.join(DTYPES)}; found {element.get('type')} "
                         f"({element.get('format')})")
    (ncomp,) = _values(path, element, "NumberOfComponents", int, 1, "1")
    (offset,) = _values(path, element, "offset", int, 1)
    f.seek(base + offset)
    if compressed:  # blocks, their uncompressed sizes, each block's compressed size
        count = int(np.frombuffer(_take(f, 24, end, path, name), "<u8")[0])
        sizes = np.frombuffer(_take(f, 8 * count, end, path, name), "<u8")
        try:
            data = b"".join(zlib.decompress(_take(f, int(s), end, path, name))
                            for s in sizes)
        except zlib.error as exc:
            raise InputError(f"{path}: array {name!r}: not zlib data ({exc}); the file is "
                             "damaged or was compressed otherwise") from None
        nbytes = len(data)
    else:
        nbytes = int(np.frombuffer(_take(f, 8, end, path, name), "<u8")[0])
    if nbytes != rows * ncomp * dtype.itemsize:
        raise InputError(f"{path}: array {name!r} has {nbytes // dtype.itemsize} values; "
                         f"{rows} x {ncomp} expected")
    if compressed:
        a = np.frombuffer(data, dtype).copy()
    else:
        _within(f, nbytes, end, path, name)
        a = np.fromfile(f, dtype, count=nbytes // dtype.itemsize)
    return a.reshape(rows, ncomp) if ncomp > 1 else a


def read_vti(path: str | Path) -> ImageData:
    """Read a ``.vti`` file of femopt's layout (appended raw data, UInt64 headers,
    zlib-compressed or not; its field data as text).

    Raises:
        InputError naming the file and what is wrong: not image data of that layout
        (another compressor, an attribute missing or malformed), an array of the wrong
        length, data that ends early or does not decompress.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            xml, base = _head(f, path)
            try:
                root = ElementTree.fromstring(xml + b"</VTKFile>")
            except ElementTree.ParseError as exc:
                raise InputError(f"{path}: not a VTK XML file: {exc}") from None
            image, piece = root.find("ImageData"), root.find("ImageData/Piece")
            if (root.get("type") != "ImageData" or image is None or piece is None
                    or root.get("header_type") != "UInt64"
                    or root.get("byte_order") != "LittleEndian"):
                raise InputError(f"{path}: not VTK image data with UInt64 headers "
                                 f"(type {root.get('type')}, header_type "
                                 f"{root.get('header_type')})")
            compressor = root.get("compressor")
            if compressor not in (None, ZLIB):
                raise InputError(f"{path}: compressor {compressor}; femopt reads {ZLIB} "
                                 "data or uncompressed data")
            extent = _values(path, image, "WholeExtent", int, 6)
            if any(extent[2 * a + 1] < extent[2 * a] for a in range(3)):
                raise InputError(f"{path}: <ImageData> WholeExtent={extent}: an axis "
                                 "ends before it starts")
            out = ImageData(extent, _values(path, image, "Origin", float, 3),
                            _values(path, image, "Spacing", float, 3))
            for element in image.findall("FieldData/DataArray"):
                name, dtype = element.get("Name"), DTYPES.get(element.get("type"))
                if dtype is None:
                    raise InputError(f"{path}: field data {name!r}: type "
                                     f"{element.get('type')}; one of {', '.join(DTYPES)} "
                                     "expected")
                out.field_data[name] = np.array((element.text or "").split(), dtype=dtype)
            for tag, data, rows in (("PointData", out.point_data, out.node_shape),
                                    ("CellData", out.cell_data, out.shape)):
                for element in piece.findall(f"{tag}/DataArray"):
                    data[element.get("Name")] = _array(f, path, base, end, element,
                                                       compressor is not None,
                                                       int(np.prod(rows)))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (zlib.error, AttributeError, TypeError, KeyError, ValueError,
            IndexError) as exc:  # what the checks above missed: still a damaged file
        raise InputError(f"{path}: not a .vti file femopt can read "
                         f"({type(exc).__name__}: {exc})") from None
    return out
