"""The design VTU: 64-bit headers, written in chunks, read back by meshio unchanged."""

from __future__ import annotations

import meshio
import numpy as np
import pytest

from femopt.backend.rows import RowSource
from femopt.io import vtu
from femopt.mesh.structured import structured_grid


@pytest.mark.parametrize("shape", [[5, 3], [3, 2, 4]])
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("chunk", [64 << 20, 24])  # 24 bytes: every array in many writes
def test_the_design_reads_back_unchanged(shape, compress, chunk, tmp_path, monkeypatch):
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 10**9 if compress else 0)
    monkeypatch.setattr(vtu, "CHUNK_BYTES", chunk)
    mesh = structured_grid(shape, [2.0, 1.0, 3.0][:len(shape)])
    rng = np.random.default_rng(3)
    density = rng.random(mesh.n_cells)
    u = rng.standard_normal((mesh.n_nodes, mesh.dim))
    t = rng.random(mesh.n_nodes)
    path = tmp_path / "design.vtu"
    vtu.write_vtu(path, mesh, {"density": density, "design": 1 - density},
                  {"displacement": u, "temperature": t})
    head = path.read_bytes()[:300].decode("ascii", "replace")
    assert 'header_type="UInt64"' in head
    assert ('compressor="vtkZLibDataCompressor"' in head) == compress
    back = meshio.read(path)
    pad = np.zeros((mesh.n_nodes, 3 - mesh.dim))
    np.testing.assert_array_equal(back.points, np.hstack([mesh.points, pad]))
    assert back.cells[0].type == ("quad" if len(shape) == 2 else "hexahedron")
    np.testing.assert_array_equal(back.cells[0].data, mesh.cells)
    np.testing.assert_array_equal(back.cell_data["density"][0], density)
    np.testing.assert_array_equal(back.cell_data["design"][0], 1 - density)
    np.testing.assert_array_equal(back.point_data["displacement"], np.hstack([u, pad]))
    np.testing.assert_array_equal(back.point_data["temperature"], t)


def test_uncompressed_arrays_carry_64_bit_byte_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 0)
    mesh = structured_grid([4, 2], [4.0, 2.0])
    path = tmp_path / "d.vtu"
    vtu.write_vtu(path, mesh, {"density": np.full(8, 0.5)}, {})
    raw = path.read_bytes()
    data = raw[raw.index(b'encoding="raw">') + len(b'encoding="raw">\n_'):]
    # the first array (points: 15 nodes x 3 x 8 bytes) behind its UInt64 count
    assert np.frombuffer(data[:8], np.uint64)[0] == 15 * 3 * 8
    # connectivity follows: 8 cells x 4 nodes x 8 bytes
    assert np.frombuffer(data[8 + 360:16 + 360], np.uint64)[0] == 8 * 4 * 8


class _Rows(RowSource):
    """A field kept elsewhere: read by rows only (the widest range asked is recorded),
    never assembled whole."""

    def __init__(self, a: np.ndarray):
        super().__init__(a.shape, a.dtype, self._read)
        self.a, self.widest = a, 0

    def _read(self, i: int, j: int) -> np.ndarray:
        self.widest = max(self.widest, j - i)
        return self.a[i:j].copy()

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the writer assembled a field whole")


@pytest.mark.parametrize("compress", [True, False])
def test_fields_of_other_types_are_converted_chunk_by_chunk(tmp_path, monkeypatch,
                                                           compress):
    """Fields of types VTK lacks (int16, float16) and 2D vectors are converted and padded
    one chunk of rows at a time: row sources are never assembled whole, each is asked
    for at most CHUNK_BYTES of rows of the written type (int16 and float16 as 8 bytes, a
    2D vector as 3 components), and the file is that of the converted host arrays."""
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 10**9 if compress else 0)
    monkeypatch.setattr(vtu, "CHUNK_BYTES", 480)
    mesh = structured_grid([20, 15], [2.0, 1.5])
    rng = np.random.default_rng(5)
    flags = rng.integers(-9, 9, mesh.n_cells).astype(np.int16)
    half = rng.random(mesh.n_cells).astype(np.float16)
    u = rng.standard_normal((mesh.n_nodes, 2)).astype(np.float32)
    sources = {"flags": _Rows(flags), "half": _Rows(half), "u": _Rows(u)}
    vtu.write_vtu(tmp_path / "rows.vtu", mesh, {"flags": sources["flags"],
                                                "half": sources["half"]},
                  {"u": sources["u"]})
    pad = np.hstack([u, np.zeros((mesh.n_nodes, 1), np.float32)])
    vtu.write_vtu(tmp_path / "whole.vtu", mesh, {"flags": flags.astype(np.int64),
                                                 "half": half.astype(np.float64)},
                  {"u": pad})
    assert (tmp_path / "rows.vtu").read_bytes() == (tmp_path / "whole.vtu").read_bytes()
    assert sources["flags"].widest == sources["half"].widest == 480 // 8
    assert sources["u"].widest == 480 // 12
    back = meshio.read(tmp_path / "rows.vtu")
    np.testing.assert_array_equal(back.cell_data["flags"][0], flags)
    np.testing.assert_array_equal(back.point_data["u"], pad)
