"""CAD export of optimized designs: closed surfaces and outlines, their volume, the
re-analysis of the exported part, units in the files, and bad input."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from femopt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def strict_manifold(vertices: np.ndarray, faces: np.ndarray) -> tuple[bool, float]:
    """Every edge in exactly two faces, traversed once in each direction (consistent
    winding); and the signed volume. Written here independently of femopt's check."""
    directed = {}
    for a, b, c in faces:
        for e in ((a, b), (b, c), (c, a)):
            directed[e] = directed.get(e, 0) + 1
    ok = all(n == 1 for n in directed.values()) and all(
        (b, a) in directed for a, b in directed)
    v = vertices[faces]
    volume = float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)
    return ok, volume


def read_stl(path: Path):
    import trimesh

    mesh = trimesh.load_mesh(path, file_type="stl", process=False)
    # STL stores each triangle's corners: merge them exactly, as a CAD tool does
    v, inv = np.unique(np.asarray(mesh.vertices), axis=0, return_inverse=True)
    return v, inv.reshape(-1)[np.asarray(mesh.faces)]


@pytest.fixture(scope="module")
def cantilever(tmp_path_factory):
    """The 3D cantilever of problems/, 30 iterations."""
    d = tmp_path_factory.mktemp("cantilever")
    text = (ROOT / "problems" / "cantilever_3d.yaml").read_text()
    (d / "cantilever.yaml").write_text(text + "output: {picture: false}\n")
    assert main(["run", str(d / "cantilever.yaml"), "--out", str(d / "res"),
                 "--max-iter", "30", "--quiet"]) == 0
    return d / "res"


@pytest.fixture(scope="module")
def mbb(tmp_path_factory):
    """The MBB beam of problems/, run to convergence, with STL and DXF written by the run."""
    d = tmp_path_factory.mktemp("mbb")
    text = (ROOT / "problems" / "mbb_beam.yaml").read_text()
    text += "output: {formats: [vtu, stl, dxf], picture: false}\n"
    (d / "mbb.yaml").write_text(text)
    assert main(["run", str(d / "mbb.yaml"), "--out", str(d / "res"), "--quiet"]) == 0
    return d / "res"


def test_cantilever_exports_are_watertight_with_the_design_volume_and_reanalysed(
        cantilever, capsys, tmp_path):
    code, out, _ = run_cli(["export", cantilever, "--format", "stl", "--verify"], capsys)
    assert code == 0, out
    vertices, faces = read_stl(cantilever / "design.stl")
    ok, volume = strict_manifold(vertices, faces)
    assert ok and volume > 0
    rho = np.load(cantilever / "density.npy")
    thresholded = np.count_nonzero(rho > 0.5) * 1.0  # unit cells
    assert volume == pytest.approx(thresholded, rel=0.03)
    report = json.loads((cantilever / "verify.json").read_text())
    v = report["verify"]
    # hex8 cells of a grid twice as fine as the design's, inside the exported surface
    assert v["mesh"]["cell_type"] == "hex8" and v["mesh"]["cells"] > 5000
    assert v["mesh"]["volume"] == pytest.approx(volume, rel=0.02)
    # the solid part is stiffer than the grey SIMP design it came from: measured 0.72
    # (0.69 on quality tetrahedra of the same surface)
    assert 0.55 < v["compliance_ratio"] < 0.85
    assert v["volume_target"] == pytest.approx(0.3 * 60 * 20 * 4)
    assert abs(v["volume_vs_target"] - 1) < 0.05
    assert "compliance" in out and "ratio" in out
    # (one test, so that the cantilever runs once per session whatever the workers)
    _other_surface_formats(cantilever, capsys, tmp_path)
    code, _, err = run_cli(["export", cantilever, "--format", "dxf", "--out",
                            tmp_path / "x.dxf"], capsys)
    assert code == 2 and "2D design" in err
    assert not (tmp_path / "x.dxf").exists()


def _other_surface_formats(cantilever, capsys, tmp_path):
    """3MF, OBJ and PLY carry the same closed surface; 3MF says its unit."""
    import trimesh

    for fmt in ("3mf", "obj", "ply"):
        path = tmp_path / f"part.{fmt}"
        code, _, err = run_cli(["export", cantilever, "--format", fmt, "--out", path], capsys)
        assert code == 0, err
        if fmt == "3mf":
            model = zipfile.ZipFile(path).read("3D/3dmodel.model").decode()
            assert 'unit="millimeter"' in model and model.count("<triangle ") > 1000
            continue
        mesh = trimesh.load_mesh(path, process=False)
        ok, volume = strict_manifold(np.asarray(mesh.vertices), np.asarray(mesh.faces))
        assert ok and volume > 0


def test_mbb_outlines_and_extruded_stl(mbb, capsys):
    import ezdxf

    summary = json.loads((mbb / "summary.json").read_text())
    assert set(summary["exports"]) == {"stl", "dxf"}
    rho = np.load(mbb / "density.npy")
    area = np.count_nonzero(rho > 0.5) * 1.0
    vertices, faces = read_stl(mbb / "design.stl")
    ok, volume = strict_manifold(vertices, faces)
    assert ok
    assert volume == pytest.approx(area * 1.0, rel=0.03)  # extruded by the thickness 1
    assert np.ptp(vertices[:, 2]) == pytest.approx(1.0)
    doc = ezdxf.readfile(mbb / "design.dxf")
    assert doc.header["$INSUNITS"] == 4  # millimetres
    lines = list(doc.modelspace().query("LWPOLYLINE"))
    assert lines and all(p.closed for p in lines)
    x = np.concatenate([[q[0] for q in p.get_points()] for p in lines])
    assert x.min() == pytest.approx(0.0, abs=0.05) and x.max() == pytest.approx(60, abs=0.05)

    code, out, _ = run_cli(["export", mbb, "--format", "svg", "--verify"], capsys)
    assert code == 0
    svg = (mbb / "design.svg").read_text()
    assert 'width="60mm"' in svg and 'fill-rule="evenodd"' in svg
    v = json.loads((mbb / "verify.json").read_text())["verify"]
    assert v["mesh"]["cell_type"] == "quad4"
    assert v["mesh"]["volume"] == pytest.approx(v["volume_exported"], rel=0.02)
    # measured 0.82 on the quad4 re-analysis grid (0.84 on quality triangles): the 0/1
    # part against the grey design's 203.2
    assert v["compliance_optimized"] == pytest.approx(203.18, rel=1e-3)
    assert 0.75 < v["compliance_ratio"] < 0.95
    assert abs(v["volume_error"]) < 0.03

    code, _, err = run_cli(["export", mbb, "--format", "stl", "--thickness", "2.5",
                            "--force"], capsys)
    assert code == 0, err
    vertices, faces = read_stl(mbb / "design.stl")
    assert np.ptp(vertices[:, 2]) == pytest.approx(2.5)


def test_unit_of_the_problem_goes_into_3mf_dxf_and_svg(write_problem, tmp_path, capsys):
    from conftest import SMALL_BEAM

    path = write_problem("unit: in\n" + SMALL_BEAM)
    out = tmp_path / "res"
    assert run_cli(["run", path, "--out", out, "--quiet"], capsys)[0] == 0
    for fmt in ("3mf", "dxf", "svg"):
        assert run_cli(["export", out, "--format", fmt, "--smooth", "0"], capsys)[0] == 0
    assert 'unit="inch"' in zipfile.ZipFile(out / "design.3mf").read("3D/3dmodel.model").decode()
    import ezdxf

    assert ezdxf.readfile(out / "design.dxf").header["$INSUNITS"] == 1
    assert 'width="12in"' in (out / "design.svg").read_text()


def test_passive_solid_and_load_regions_stay_in_the_part(write_problem, tmp_path, capsys):
    from conftest import SMALL_BEAM

    # a solid deck along the top
    text = SMALL_BEAM.replace("max: 0.5", "max: 0.4") + (
        "design:\n  passive:\n    - region: {box: {min: [0.0, 3.0], max: [12.0, 4.0]}}\n"
        "      value: solid\n")
    out = tmp_path / "res"
    assert run_cli(["run", write_problem(text), "--out", out, "--max-iter", "3", "--quiet",
                    ], capsys)[0] == 0
    rho = np.load(out / "density.npy").reshape(4, 12)
    assert np.all(rho[3] == 1.0)
    assert run_cli(["export", out, "--format", "dxf", "--smooth", "0"], capsys)[0] == 0
    import ezdxf

    pts = np.concatenate([np.array(p.get_points())[:, :2]
                          for p in ezdxf.readfile(out / "design.dxf").modelspace()
                          .query("LWPOLYLINE")])
    top = pts[pts[:, 1] > 3.99]
    assert top[:, 0].min() < 0.05 and top[:, 0].max() > 11.95  # the whole deck


# -- bad input: exit 2, a clear message, nothing written ------------------------------


@pytest.fixture
def small_result(write_problem, tmp_path, capsys):
    from conftest import SMALL_BEAM

    out = tmp_path / "res"
    assert run_cli(["run", write_problem(SMALL_BEAM), "--out", out, "--max-iter", "3",
                    "--quiet"], capsys)[0] == 0
    return out


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.parametrize("args, message", [
    (["--format", "step"], "unknown exporter type 'step'"),
    (["--format", "dxff"], "did you mean 'dxf'?"),
    (["--format", "stl", "--out", "{dir}/design.vtu"], "exists; use --force"),
    (["--format", "vtu"], "exists; use --force"),
    (["--format", "stl", "--out", "{dir}/nowhere/part.stl"], "no such directory"),
])
def test_bad_export_arguments(small_result, capsys, args, message):
    before = _files(small_result)
    args = [a.replace("{dir}", str(small_result)) for a in args]
    code, _, err = run_cli(["export", small_result, *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    if "unknown" in message:
        assert "(known: 3mf, dxf, obj, ply, stl, svg, vti, vtu)" in err
    assert _files(small_result) == before


@pytest.mark.parametrize("threshold", ["0", "1", "1.5", "-0.2", "half"])
def test_threshold_outside_zero_one_exits_2(small_result, capsys, threshold):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(small_result), "--format", "stl", "--threshold", threshold])
    assert exc.value.code == 2
    assert "--threshold" in capsys.readouterr().err
    assert not (small_result / "design.stl").exists()


def test_results_directory_without_a_design(small_result, tmp_path, capsys):
    (small_result / "density.npy").unlink()
    code, _, err = run_cli(["export", small_result, "--format", "stl"], capsys)
    assert code == 2 and "no density.npy" in err
    code, _, err = run_cli(["export", tmp_path / "nope", "--format", "stl"], capsys)
    assert code == 2 and "no such results directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["export", empty, "--format", "stl"], capsys)
    assert code == 2 and "not a femopt results directory" in err
    assert list(empty.iterdir()) == []




def test_large_designs_are_written_uncompressed_and_read_back(tmp_path, monkeypatch):
    """Above COMPRESS_UP_TO cells the VTU is raw binary (zlib would take minutes at
    10^7 cells); ParaView and meshio read it the same."""
    import meshio

    from femopt.io import vtu
    from femopt.mesh import structured_grid

    mesh = structured_grid((6, 4, 2), (6.0, 4.0, 2.0))
    rho = np.linspace(0.0, 1.0, mesh.n_cells)
    u = np.random.default_rng(0).standard_normal((mesh.n_nodes, 3))
    sizes = {}
    for limit in (10**6, 10):
        monkeypatch.setattr(vtu, "COMPRESS_UP_TO", limit)
        path = tmp_path / f"d{limit}.vtu"
        vtu.write_vtu(path, mesh, {"density": rho}, {"u": u})
        back = meshio.read(path)
        np.testing.assert_array_equal(back.cell_data["density"][0], rho)
        np.testing.assert_array_equal(back.point_data["u"], u)
        sizes[limit] = (path.stat().st_size, b"compressor" in path.read_bytes()[:2000])
    assert sizes[10**6][1] and not sizes[10][1]


def test_an_outline_with_a_hole_and_collinear_points_extrudes_to_a_closed_solid():
    """Ear clipping (mapbox-earcut) on the outlines' own points: the extruded solid is
    closed and holds exactly the area (9 - 1) times the thickness."""
    from femopt.io.contour import extrude, triangulate
    from femopt.io.surface import check_surface

    outer = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [3, 1], [3, 2], [3, 3], [1.5, 3],
                      [0, 3], [0, 1.5]], dtype=float)
    hole = np.array([[1, 1], [1, 2], [2, 2], [2, 1]], dtype=float)  # clockwise
    island = np.array([[5, 0], [6, 0], [6, 1], [5, 1]], dtype=float)
    points, tris = triangulate([outer, hole, island])
    solid = extrude(points, tris, 2.0)
    check = check_surface(np.asarray(solid.vertices), np.asarray(solid.faces))
    assert check.watertight, check.describe()
    assert check.volume == pytest.approx((9 - 1 + 1) * 2.0, rel=1e-12)
