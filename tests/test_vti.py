"""The design of a structured grid as VTK image data (design.vti): the fields of the same
run's design.vtu at the image's own indices, its header, chunked writing, read back by
the API; a mesh that is not a grid refused at validation; a run whose design files
surely do not fit on the disk refused before it starts."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path
from xml.etree import ElementTree

import meshio
import numpy as np
import pytest

import femopt
from femopt.cli import main
from femopt.errors import InputError
from femopt.io import manifest, vti, vtu
from femopt.io.design_space import size_text
from femopt.io.vti import read_vti, write_vti
from femopt.mesh.structured import structured_grid
from test_vtu import _Rows

ROOT = Path(__file__).resolve().parents[1]
BEAM_2D = """\
name: beam_2d
mesh: {type: structured, shape: [12, 4], size: [6.0, 2.0], origin: [1.0, -0.5]}
physics: {type: linear_elasticity}
supports:
  - region: {face: x_min}
    dofs: [x]
  - region: {point: [7.0, -0.5]}
    dofs: [y]
loads:
  - region: {point: [1.0, 1.5]}
    force: [0.0, -1.0]
filters:
  - {type: density, radius: 0.75}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.5}
optimizer: {type: oc, max_iter: 4}
"""
CANTILEVER_3D = """\
name: cantilever_3d
mesh: {type: structured, shape: [6, 3, 2], size: [3.0, 1.5, 0.5]}
physics: {type: linear_elasticity}
supports:
  - region: {face: x_min}
loads:
  - region: {box: {min: [3.0, 0.0, 0.0], max: [3.0, 0.0, 0.5]}}
    force: [0.0, -1.0, 0.0]
filters:
  - {type: density, radius: 0.6}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.4}
optimizer: {type: oc, max_iter: 4}
"""
# a density design on a mesh read from a file (triangles)
PLATE_FILE = f"""\
name: plate
mesh: {{type: file, path: {ROOT / 'problems' / 'meshes' / 'plate_with_hole_coarse.msh'}}}
physics: {{type: linear_elasticity}}
supports:
  - region: {{group: left}}
    dofs: [x]
  - region: {{group: bottom}}
    dofs: [y]
loads:
  - region: {{group: right}}
    force: [1.0, 0.0]
    distribute: total
objective: {{type: compliance}}
constraints:
  - {{type: volume, max: 0.5}}
optimizer: {{type: oc, max_iter: 2}}
"""


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _header(path: Path) -> ElementTree.Element:
    """The XML of a .vti before its appended data, parsed here without femopt's reader."""
    raw = path.read_bytes()
    head = raw[:raw.index(b"<AppendedData")]
    return ElementTree.fromstring(head + b"</VTKFile>")


def _image_index(coords: np.ndarray, origin, spacing, counts, offset: float) -> np.ndarray:
    """The x-fastest flat index in an image of ``counts`` per axis of the points
    ``coords`` (offset 0: nodes; 0.5: cell centres), checked to lie on the image."""
    ijk = (coords - np.asarray(origin)) / np.asarray(spacing) - offset
    index = np.rint(ijk).astype(np.int64)
    np.testing.assert_allclose(ijk, index, atol=1e-9)
    flat = np.zeros(len(coords), dtype=np.int64)
    for axis in reversed(range(len(counts))):
        assert np.all((index[:, axis] >= 0) & (index[:, axis] < counts[axis]))
        flat = flat * counts[axis] + index[:, axis]
    return flat


@pytest.mark.parametrize("text, shape, origin, spacing", [
    (BEAM_2D, (12, 4, 0), (1.0, -0.5, 0.0), (0.5, 0.5, 1.0)),
    (CANTILEVER_3D, (6, 3, 2), (0.0, 0.0, 0.0), (0.5, 0.5, 0.25)),
], ids=["2d", "3d"])
def test_a_grid_run_writes_the_fields_of_its_vtu_as_image_data(
        text, shape, origin, spacing, write_problem, tmp_path, capsys):
    """`formats: [vtu, vti]`: the image's extent, origin and spacing are the grid's, and
    each cell and point value of design.vti equals the vtu's value at the cell or node at
    that image index (found from the vtu's coordinates: x fastest, then y, then z)."""
    path = write_problem(text + "output: {formats: [vtu, vti], picture: false, "
                                "series_every: 0}\n")
    out = tmp_path / "out"
    code, _, _ = run_cli(["run", path, "--out", out, "--quiet"], capsys)
    assert code == 0
    root = _header(out / "design.vti")
    assert root.get("type") == "ImageData" and root.get("header_type") == "UInt64"
    image = root.find("ImageData")
    extent = [int(v) for v in image.get("WholeExtent").split()]
    assert extent == [0, shape[0], 0, shape[1], 0, shape[2]]
    assert root.find("ImageData/Piece").get("Extent") == image.get("WholeExtent")
    assert tuple(float(v) for v in image.get("Origin").split()) == origin
    assert tuple(float(v) for v in image.get("Spacing").split()) == spacing

    mesh = meshio.read(out / "design.vtu")
    back = read_vti(out / "design.vti")
    assert back.extent == tuple(extent)
    dim = 2 if shape[2] == 0 else 3
    cells, nodes = np.prod(shape[:dim]), np.prod([n + 1 for n in shape[:dim]])
    assert mesh.points.shape[0] == nodes and len(mesh.cells[0].data) == cells
    pts = mesh.points[:, :dim]
    node_at = _image_index(pts, origin[:dim], spacing[:dim], [n + 1 for n in shape[:dim]],
                           0.0)
    cell_at = _image_index(pts[mesh.cells[0].data].mean(axis=1), origin[:dim],
                           spacing[:dim], shape[:dim], 0.5)
    assert np.array_equal(np.sort(node_at), np.arange(nodes))
    assert np.array_equal(np.sort(cell_at), np.arange(cells))
    assert set(back.cell_data) == set(mesh.cell_data) == {"density", "design"}
    assert set(back.point_data) == set(mesh.point_data) == {"displacement"}
    for name, values in mesh.cell_data.items():
        assert np.array_equal(back.cell_data[name][cell_at], values[0])
    u = back.point_data["displacement"]
    assert u.shape == (nodes, 3) and np.count_nonzero(u[:, :dim]) > nodes
    assert np.array_equal(u[node_at], mesh.point_data["displacement"])
    # femopt numbers a grid as the image does: no reordering happened
    assert np.array_equal(node_at, np.arange(nodes))
    assert np.array_equal(cell_at, np.arange(cells))
    assert np.array_equal(back.cell_data["density"], np.load(out / "density.npy"))
    assert bytes(back.field_data["unit"]).decode() == "mm"


def test_the_api_reads_the_fields_of_a_vti_run(write_problem, tmp_path):
    """`Result.fields()` with design.vti alone (meshio cannot read image data)."""
    path = write_problem(BEAM_2D + "output: {formats: [vti], picture: false}\n")
    result = femopt.run(path, out=tmp_path / "res")
    assert not (tmp_path / "res" / "design.vtu").exists()
    fields = result.fields()
    assert set(fields) == {"density", "design", "displacement"}
    assert np.array_equal(fields["density"], result.density)
    assert np.array_equal(fields["design"], result.design)
    assert fields["displacement"].shape == (13 * 5, 3)
    assert np.all(fields["displacement"][:, 2] == 0)
    # the loaded point (1, 1.5) is node 4 * 13 of the x-fastest grid: it moves down
    assert fields["displacement"][4 * 13, 1] < 0
    assert fields["displacement"][4 * 13, 1] == fields["displacement"][:, 1].min()


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dim", [2, 3])
def test_fields_are_written_by_chunks_and_read_back(dim, compress, tmp_path, monkeypatch):
    """Row sources are asked for at most CHUNK_BYTES of rows and never assembled whole;
    the file reads back exactly, uncompressed arrays behind their UInt64 byte counts."""
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 10**9 if compress else 0)
    monkeypatch.setattr(vtu, "CHUNK_BYTES", 480)
    shape = (12, 9) if dim == 2 else (6, 5, 4)
    mesh = structured_grid(shape, [1.0, 2.0, 3.0][:dim], [-1.0, 0.5, 2.0][:dim])
    rng = np.random.default_rng(7)
    rho, u = rng.random(mesh.n_cells), rng.standard_normal((mesh.n_nodes, dim))
    t = rng.random(mesh.n_nodes).astype(np.float32)
    sources = {"rho": _Rows(rho), "u": _Rows(u), "t": _Rows(t)}
    path = tmp_path / "d.vti"
    write_vti(path, mesh.grid, {"density": sources["rho"]},
              {"u": sources["u"], "t": sources["t"]}, vtu.labels("p", "m"))
    assert sources["rho"].widest == 480 // 8 and sources["u"].widest == 480 // 24
    assert sources["t"].widest == 480 // 4
    back = read_vti(path)
    pad = np.hstack([u, np.zeros((mesh.n_nodes, 3 - dim))])
    assert np.array_equal(back.cell_data["density"], rho)
    assert np.array_equal(back.point_data["u"], pad)
    assert back.point_data["t"].dtype == np.float32 and np.array_equal(back.point_data["t"], t)
    assert back.origin == (-1.0, 0.5, 2.0 if dim == 3 else 0.0)
    assert back.spacing == tuple(s / n for s, n in zip([1.0, 2.0, 3.0], shape)) + \
        ((1.0,) if dim == 2 else ())
    assert bytes(back.field_data["problem"]).decode() == "p"
    raw = path.read_bytes()
    assert (b'compressor="vtkZLibDataCompressor"' in raw[:2000]) == compress
    if not compress:  # PointData first: u (nodes x 3 float64) behind its byte count
        data = raw[raw.index(b'encoding="raw">') + len(b'encoding="raw">\n_'):]
        assert np.frombuffer(data[:8], np.uint64)[0] == mesh.n_nodes * 3 * 8
        # no points or connectivity: the arrays and their counts, the XML and the end
        assert len(data) == 3 * 8 + mesh.n_nodes * (24 + 4) + mesh.n_cells * 8 + \
            len(b"\n</AppendedData>\n</VTKFile>\n")


def test_a_field_of_the_wrong_length_is_refused(tmp_path):
    grid = structured_grid((3, 2), (3.0, 2.0)).grid
    with pytest.raises(ValueError, match="has 5 rows; the grid has 6 cells"):
        write_vti(tmp_path / "d.vti", grid, {"density": np.zeros(5)}, {})


@pytest.mark.parametrize("command", ["validate", "run"])
def test_vti_on_a_mesh_from_a_file_is_refused_before_the_run(command, write_problem,
                                                              tmp_path, capsys):
    path = write_problem(PLATE_FILE + "output: {formats: [vtu, vti]}\n")
    out = tmp_path / "out"
    args = [command, path] + (["--out", out] if command == "run" else [])
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "Traceback" not in err
    assert f"{path}:" in err and "output.formats.1: format vti writes" in err
    assert "structured grid" in err and "tri3" in err
    assert len(err.strip().splitlines()) == 1  # vtu is not refused
    assert not out.exists()


def test_outlines_of_a_3d_grid_are_refused_before_the_run(write_problem, tmp_path, capsys):
    path = write_problem(CANTILEVER_3D + "output: {formats: [stl, svg]}\n")
    code, _, err = run_cli(["validate", path], capsys)
    assert code == 2 and "output.formats.1: format svg draws the outlines" in err


DiskUsage = namedtuple("DiskUsage", "total used free")


@pytest.mark.parametrize("formats, free, refused", [
    ("[vtu]", 4691, True),
    ("[vtu]", 1163, True),
    ("[vtu]", 4692, False),
    ("[vti]", 1163, True),
    ("[vti]", 1164, False),
    ("[vtu, vti]", 5855, True),
])
def test_design_files_that_do_not_fit_are_refused_before_the_run(
        formats, free, refused, write_problem, tmp_path, capsys, monkeypatch):
    """The 12 x 4 beam written uncompressed: design.vtu is at least 24 bytes per node
    (65 points), 8 x 4 + 8 + 1 per cell (48 cells: connectivity, offsets, types) and the
    fields at 4 bytes a value (density and design per cell, 3 displacement components
    per node): 4,692 bytes; design.vti the fields alone, 1,164 bytes. Free space is asked
    of the nearest existing folder; nothing is written when the run is refused. vti is
    suggested only where it fits."""
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 0)
    asked = []

    def disk_usage(p):
        asked.append(Path(p))
        return DiskUsage(10**12, 10**12 - free, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    path = write_problem(BEAM_2D.replace("max_iter: 4", "max_iter: 1") +
                         f"output: {{formats: {formats}, picture: false}}\n")
    out = tmp_path / "new" / "out"
    code, _, err = run_cli(["run", path, "--out", out, "--quiet"], capsys)
    assert asked == [tmp_path]
    if not refused:
        assert code == 0 and (out / f"design.{formats[1:4]}").is_file()
        return
    assert code == 2 and "Traceback" not in err
    assert not (tmp_path / "new").exists()
    assert err.startswith("error: output.formats: the design files need at least")
    assert f"{tmp_path} has {free:,} bytes free" in err
    assert "previous run" not in err  # a new directory: nothing counts as free
    if formats == "[vtu]":
        assert "at least 4,692 bytes (design.vtu 4,692 bytes)" in err
    elif formats == "[vti]":
        assert "(design.vti 1,164 bytes)" in err
    else:
        assert "5,856 bytes (design.vtu 4,692 bytes, design.vti 1,164 bytes)" in err
    if formats != "[vti]" and free >= 1164:
        assert "`formats: [vti]` writes no points or cells (at least 1,164 bytes)" in err
        assert "choose another directory" not in err
    else:
        assert "formats: [vti]" not in err
        assert err.rstrip().endswith("Free space there or choose another directory (--out)")


def test_small_designs_are_not_estimated(write_problem, tmp_path, capsys, monkeypatch):
    """A design written compressed has no size known beforehand: no free space is
    asked for, even with none free."""
    monkeypatch.setattr(shutil, "disk_usage", lambda p: pytest.fail("asked for space"))
    path = write_problem(BEAM_2D.replace("max_iter: 4", "max_iter: 1") +
                         "output: {formats: [vtu, vti], picture: false}\n")
    assert run_cli(["run", path, "--out", tmp_path / "out", "--quiet"], capsys)[0] == 0
    assert vti.vti_bytes(structured_grid((1000, 1000), (1.0, 1.0)).grid, 2, 3) == 0
    assert vti.vti_bytes(structured_grid((1001, 1000), (1.0, 1.0)).grid, 2, 3) == \
        4 * (2 * 1001 * 1000 + 3 * 1002 * 1001)


def test_femopt_export_writes_vti_of_a_grid_and_refuses_a_mesh(write_problem, tmp_path,
                                                               capsys):
    """`femopt export --format vti`: the densities of a grid's results directory; a
    design on a mesh from a file is refused (exit 2) and nothing is written."""
    grid = write_problem(BEAM_2D + "output: {picture: false, series_every: 0}\n", "g.yaml")
    assert run_cli(["run", grid, "--out", tmp_path / "g", "--quiet"], capsys)[0] == 0
    code, _, err = run_cli(["export", tmp_path / "g", "--format", "vti"], capsys)
    assert code == 0, err
    back = read_vti(tmp_path / "g" / "design.vti")
    assert back.extent == (0, 12, 0, 4, 0, 0)
    assert np.array_equal(back.cell_data["density"], np.load(tmp_path / "g" / "density.npy"))
    plate = write_problem(PLATE_FILE + "output: {picture: false, series_every: 0}\n",
                          "p.yaml")
    assert run_cli(["run", plate, "--out", tmp_path / "p", "--quiet"], capsys)[0] == 0
    code, _, err = run_cli(["export", tmp_path / "p", "--format", "vti"], capsys)
    assert code == 2 and "format vti writes VTK image data, which needs a structured" in err
    assert "(format vtu writes any mesh)" in err and "output.formats" not in err
    assert not (tmp_path / "p" / "design.vti").exists()


def test_a_fresh_run_counts_the_previous_runs_files_as_free(write_problem, tmp_path, capsys,
                                                            monkeypatch):
    """Every file the previous run wrote is removed before the new one writes (not only
    its design file), so their bytes count as free; a file femopt did not write stays
    and counts nothing. The 120 x 40 beam's design.vtu, uncompressed: 36 bytes per node
    (4,961) and 49 per cell (4,800) as in the 12 x 4 beam's estimate, 413,796 bytes."""
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 0)
    text = BEAM_2D.replace("max_iter: 4", "max_iter: 1")
    out = tmp_path / "out"
    first = write_problem(text + "output: {formats: [vti], picture: false}\n", "a.yaml")
    assert run_cli(["run", first, "--out", out, "--quiet"], capsys)[0] == 0
    (out / "notes.txt").write_bytes(b"x" * 100_000)  # not femopt's
    previous = {p.name for p in out.iterdir()} - {manifest.MANIFEST, "notes.txt"}
    assert {"design.vti", "density.npy", "history.csv", "summary.json"} <= previous
    assert manifest.previous_files(out) == sorted(previous)
    credit = sum((out / name).stat().st_size for name in previous)
    assert credit > (out / "design.vti").stat().st_size
    need = 36 * 121 * 41 + 49 * 120 * 40
    second = write_problem(text.replace("shape: [12, 4]", "shape: [120, 40]") +
                           "output: {formats: [vtu], picture: false}\n", "b.yaml")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for free, refused in [(need - credit - 1, True), (need - credit, False)]:
        monkeypatch.setattr(shutil, "disk_usage",
                            lambda p, free=free: DiskUsage(10**12, 10**12 - free, free))
        code, _, err = run_cli(["run", second, "--out", out, "--quiet"], capsys)
        if refused:
            assert code == 2 and f"at least {size_text(need)} (design.vtu" in err
            assert f"{out} has {size_text(need - 1)} free (counting {size_text(credit)} " \
                "of the previous run's files, removed first)" in err
            assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert code == 0 and (out / "design.vtu").stat().st_size >= need
    assert not (out / "design.vti").exists() and (out / "notes.txt").exists()


def test_resume_counts_nothing_as_free(write_problem, tmp_path, capsys, monkeypatch):
    """Resume removes nothing and writes design.vtu beside the old one before renaming it
    over it: the old file's bytes are not free. The advice is to free space (the
    directory and its problem file are the run's)."""
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 0)
    path = write_problem(BEAM_2D.replace("max_iter: 4", "max_iter: 2") +
                         "output: {formats: [vtu], picture: false, checkpoint_every: 1}\n")
    out = tmp_path / "out"
    assert run_cli(["run", path, "--out", out, "--quiet"], capsys)[0] == 0
    assert (out / "design.vtu").stat().st_size > 4692
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for free, refused in [(4691, True), (4692, False)]:
        monkeypatch.setattr(shutil, "disk_usage",
                            lambda p, free=free: DiskUsage(10**12, 10**12 - free, free))
        code, _, err = run_cli(["resume", out, "--max-iter", "3", "--quiet"], capsys)
        if refused:
            assert code == 2 and "(design.vtu 4,692 bytes)" in err
            assert f"{out} has 4,691 bytes free. Free space there to resume" in err
            assert "previous run" not in err and "formats: [vti]" not in err
            assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert code == 0, err
    assert len((out / "history.csv").read_text().splitlines()) == 4


def _damage(raw: bytes, how: str) -> bytes:
    """A copy of a .vti file (one compressed block per array) damaged ``how``."""
    data = raw.index(vti.MARK) + len(vti.MARK) + 2  # after '>', '\n' and '_'
    if how == "truncated":
        return raw[:(data + len(raw)) // 2]
    if how == "lz4":
        return raw.replace(b"vtkZLibDataCompressor", b"vtkLZ4DataCompressor")
    if how == "not zlib":  # the first block's zlib header, after 3 + 1 UInt64 counts
        return raw[:data + 32] + b"\0\0" + raw[data + 34:]
    if how == "no spacing":
        return raw.replace(b' Spacing="', b' Sp="', 1)
    if how == "no offset":
        return raw.replace(b' offset="', b' off="', 1)
    if how == "short extent":
        return raw.replace(b'WholeExtent="0 3 0 2 0 0"', b'WholeExtent="0 3 0 2"')
    raise AssertionError(how)


@pytest.mark.parametrize("how, compress, message", [
    ("truncated", True, "array 'density': the file ends before its data does (truncated?)"),
    ("truncated", False, "array 'u': the file ends before its data does (truncated?)"),
    ("lz4", True, "compressor vtkLZ4DataCompressor; femopt reads vtkZLibDataCompressor"),
    ("not zlib", True, "array 'u': not zlib data (Error -3 while decompressing data"),
    ("no spacing", True, "<ImageData> has no Spacing attribute"),
    ("no offset", False, "<DataArray> has no offset attribute"),
    ("short extent", True, "<ImageData> WholeExtent='0 3 0 2': 6 int value(s) expected"),
])
def test_a_damaged_vti_is_refused_naming_the_file(how, compress, message, tmp_path,
                                                  monkeypatch):
    """A file cut short, compressed otherwise, or missing an attribute: an InputError
    that names the file and what is wrong, never a zlib or Python error."""
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 10**9 if compress else 0)
    mesh = structured_grid((3, 2), (3.0, 2.0))
    path = tmp_path / "d.vti"
    write_vti(path, mesh.grid, {"density": np.linspace(0, 1, mesh.n_cells)},
              {"u": np.ones((mesh.n_nodes, 2))})
    assert read_vti(path).point_data["u"].shape == (12, 3)
    path.write_bytes(_damage(path.read_bytes(), how))
    with pytest.raises(InputError) as info:
        read_vti(path)
    assert str(info.value).startswith(f"{path}: {message}")
