"""The final output of the device paths streams from the device: design.vtu, design.npy,
density.npy and the series read the fields kept there (``RowSource``) by slabs of
bounded size, and write the same bytes as the whole-array writers did."""

from __future__ import annotations

import io
from pathlib import Path

import meshio
import numpy as np
import pytest
import yaml

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import rows as rows_module
from femopt.backend.rows import RowSource, cell_rows, mean_of, node_rows
from femopt.evaluation.build import build_model
from femopt.evaluation.device import DevicePath
from femopt.evaluation.grid_device import GridDevicePath
from femopt.evaluation.model import Model
from femopt.io import vtu
from femopt.io.npy import npy_header, save_npy
from femopt.mesh.structured import structured_grid
from femopt.runner import run_model

PROBLEMS = Path(__file__).resolve().parent.parent / "problems"
OUTPUTS = ("design.vtu", "design.npy", "density.npy", "series-000000.vtu",
           "series-000002.vtu")


class Recording(np.ndarray):
    """A NumPy array that records the widest slice of its last axis it was asked for
    (a device array as the writers see it)."""

    widest: list[int]

    def __array_finalize__(self, obj):  # a view (a reshape) records into the same list
        self.widest = getattr(obj, "widest", [0])

    def __getitem__(self, key):
        last = key[-1] if isinstance(key, tuple) else key
        if isinstance(last, slice):
            axis = -1 if isinstance(key, tuple) else 0
            self.widest[0] = max(self.widest[0], len(range(*last.indices(self.shape[axis]))))
        return super().__getitem__(key)


def recording(a: np.ndarray) -> Recording:
    out = a.view(Recording)
    out.widest = [0]
    return out


def npy_bytes(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


@pytest.mark.parametrize("shape, dtype", [((1000,), np.float64), ((777, 3), np.float64),
                                          ((501,), np.int64), ((300, 2), np.float32)])
def test_npy_by_slabs_equals_np_save(tmp_path, shape, dtype):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    save_npy(tmp_path / "a.npy", cell_rows(a), slab_bytes=1000)
    assert (tmp_path / "a.npy").read_bytes() == npy_bytes(a)
    assert npy_header(a.shape, a.dtype) == npy_bytes(a)[:-a.nbytes]


def test_npy_asks_for_bounded_slabs(tmp_path):
    a = recording(np.arange(10_000, dtype=np.float64))
    save_npy(tmp_path / "a.npy", cell_rows(a), slab_bytes=1000)
    assert a.widest[0] == 125  # 1000 bytes of float64
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.asarray(a))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_node_rows_equal_the_node_major_copy(k):
    layout = GridLayout((5, 4, 3), k)
    v = np.random.default_rng(k).standard_normal(layout.n_dofs)
    field = node_rows(v, k)
    expected = layout.to_dofs(v).reshape(-1, k)
    expected = expected[:, 0] if k == 1 else expected
    assert field.shape == expected.shape and field.nbytes == expected.nbytes
    assert np.array_equal(np.asarray(field), expected)
    assert np.array_equal(field.rows(17, 41), expected[17:41])
    assert mean_of(cell_rows(v)) == float(np.mean(v))


@pytest.mark.parametrize("dim", [2, 3])
def test_vtu_by_slabs_equals_the_whole_array_writer(tmp_path, monkeypatch, dim):
    """Cell and node fields given as row sources (a grid-layout state converted per
    slab) write the same bytes as the host arrays, and the writer asks each source
    for at most CHUNK_BYTES of rows: an exact bound."""
    monkeypatch.setattr(vtu, "CHUNK_BYTES", 1024)
    shape = (40, 30) if dim == 2 else (12, 10, 8)
    mesh = structured_grid(shape, [float(n) for n in shape])
    layout = GridLayout(shape, dim)
    rng = np.random.default_rng(11)
    rho = recording(rng.random(mesh.n_cells))
    u = recording(rng.standard_normal(layout.n_dofs))
    t = rng.standard_normal(mesh.n_nodes)
    whole_u = layout.to_dofs(np.asarray(u)).reshape(-1, dim)
    vtu.write_vtu(tmp_path / "whole.vtu", mesh, {"density": np.asarray(rho)},
                  {"displacement": whole_u, "temperature": t}, vtu.labels("p", "mm"))
    vtu.write_vtu(tmp_path / "slabs.vtu", mesh, {"density": cell_rows(rho)},
                  {"displacement": node_rows(u, dim), "temperature": cell_rows(t)},
                  vtu.labels("p", "mm"))
    assert (tmp_path / "slabs.vtu").read_bytes() == (tmp_path / "whole.vtu").read_bytes()
    assert rho.widest[0] == 1024 // 8
    # padded to 3 components in 2D: the chunk counts 3 components of 8 bytes per node
    assert u.widest[0] == 1024 // 24


def test_vtu_uncompressed_by_slabs(tmp_path, monkeypatch):
    """Above the compression limit the fields go to the file chunk by chunk."""
    monkeypatch.setattr(vtu, "COMPRESS_UP_TO", 10)
    monkeypatch.setattr(vtu, "CHUNK_BYTES", 800)
    mesh = structured_grid((9, 7, 5), [9.0, 7.0, 5.0])
    layout = GridLayout((9, 7, 5), 3)
    u = recording(np.random.default_rng(5).standard_normal(layout.n_dofs))
    rho = np.linspace(0, 1, mesh.n_cells)
    whole = layout.to_dofs(np.asarray(u)).reshape(-1, 3)
    vtu.write_vtu(tmp_path / "a.vtu", mesh, {"density": rho}, {"u": whole})
    vtu.write_vtu(tmp_path / "b.vtu", mesh, {"density": cell_rows(rho)},
                  {"u": node_rows(u, 3)})
    assert (tmp_path / "a.vtu").read_bytes() == (tmp_path / "b.vtu").read_bytes()
    assert u.widest[0] == 800 // 24
    m = meshio.read(tmp_path / "b.vtu")
    assert np.array_equal(m.point_data["u"], whole)


def _problem(tmp_path: Path, name: str, edit=None) -> Path:
    data = yaml.safe_load((PROBLEMS / f"{name}.yaml").read_text())
    data.setdefault("output", {})["picture"] = False
    if edit is not None:
        edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _frequency_on_grid(data):
    data["mesh"]["shape"] = [160, 20]
    data["solver"] = {"type": "multigrid", "rtol": 1e-10}
    data["filters"][0]["radius"] = 0.12


def _mesh_file(data):
    data["mesh"]["path"] = str(PROBLEMS / "meshes" / "bracket_3d.msh")


# grid path: 3D and 2D elasticity, two load cases, heat (one dof per node), a design map,
# a robust problem, modes; mesh path: a tet4 mesh from a file
CASES = {"cantilever_3d": None, "two_load_cases": None, "heat_volume_to_point": None,
         "bridge_3d_symmetric": None, "force_inverter_robust": None,
         "clamped_beam_frequency": _frequency_on_grid, "bracket_3d": _mesh_file}


def _whole_arrays(monkeypatch):
    """The writers given whole host arrays, as before the output streamed."""
    design_final = DevicePath.design_final
    monkeypatch.setattr(DevicePath, "design_final",
                        lambda self, rho, lazy=False: design_final(self, rho, False))
    monkeypatch.setattr(Model, "output_cells", lambda self, a: self.host_cells(a))
    monkeypatch.setattr(GridDevicePath, "mode_rows", GridDevicePath.host_modes)


def _run(problem: Path, out: Path, array_module=np, device: str = "gpu") -> Model:
    model = build_model(problem, device, array_module=array_module)
    run_model(model, problem.read_bytes(), out, max_iter=2, quiet=True, force=True)
    return model


@pytest.mark.parametrize("name", sorted(CASES))
def test_twin_run_writes_the_bytes_of_the_whole_array_writer(tmp_path, monkeypatch, name):
    """A run on the grid path's NumPy twin: its design.vtu, design.npy, density.npy and
    series steps, written from the device by slabs of at most 4 KiB (no field is ever
    made whole on the host: ``RowSource.__array__`` is not called), are byte for byte
    those of the whole-array writers."""
    problem = _problem(tmp_path, name, CASES[name])
    asked, whole = [0, 0], []
    rows = RowSource.rows

    def recorded(self, i, j):
        asked[0] = max(asked[0], (j - i) * self.row_bytes)
        asked[1] += 1
        return rows(self, i, j)

    with monkeypatch.context() as m:
        m.setattr(vtu, "CHUNK_BYTES", 4096)
        m.setattr(rows_module, "SLAB_BYTES", 4096)
        m.setattr(RowSource, "rows", recorded)
        m.setattr(RowSource, "__array__", lambda self, *a, **k: whole.append(self))
        _run(problem, tmp_path / "slabs")
    assert whole == [] and asked[1] > 0
    assert 4096 - 24 < asked[0] <= 4096
    with monkeypatch.context() as m:
        _whole_arrays(m)
        _run(problem, tmp_path / "whole")
    written = sorted(p.name for p in (tmp_path / "slabs").iterdir()
                     if p.name in OUTPUTS or p.name.startswith("series-"))
    assert set(OUTPUTS) <= set(written)
    assert written == sorted(p.name for p in (tmp_path / "whole").iterdir()
                             if p.name in OUTPUTS or p.name.startswith("series-"))
    for f in written:
        slabs, whole_file = tmp_path / "slabs" / f, tmp_path / "whole" / f
        assert slabs.read_bytes() == whole_file.read_bytes(), f
    # series.h5: each step's densities, filled slab by slab, as the whole array's
    import h5py

    with h5py.File(tmp_path / "slabs" / "series.h5", "r") as a, \
            h5py.File(tmp_path / "whole" / "series.h5", "r") as b:
        steps = sorted(a["density"])
        assert steps == sorted(b["density"]) and len(steps) >= 2
        for step in steps:
            got, expected = a["density"][step], b["density"][step]
            assert got.dtype == expected.dtype == np.float64
            assert np.array_equal(got[()], expected[()]), step


def test_cpu_run_writes_host_arrays(tmp_path, monkeypatch):
    """The CPU path's fields are host arrays: the writers are given no row source (the
    VTU writer reads every array by rows itself), np.save writes."""
    from femopt import runner
    from femopt.io import plugin

    problem = _problem(tmp_path, "mbb_beam")
    given = []

    def recorded(write):
        def wrapped(path, mesh, cell_data, point_data, *args, **kwargs):
            given.extend([*cell_data.values(), *point_data.values()])
            return write(path, mesh, cell_data, point_data, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(plugin, "write_vtu", recorded(vtu.write_vtu))
    monkeypatch.setattr(vtu, "write_vtu", recorded(vtu.write_vtu))  # the series'
    save = runner.save_npy
    monkeypatch.setattr(runner, "save_npy",
                        lambda path, a, *args: given.append(a) or save(path, a, *args))
    _run(problem, tmp_path / "out", array_module=None, device="cpu")
    assert len(given) >= 4  # design.vtu's density, design and state; the two .npy
    assert not any(isinstance(a, RowSource) for a in given)
    assert np.load(tmp_path / "out" / "design.npy").shape == (60 * 20,)


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 3])
def test_gpu_node_rows_equal_the_node_major_copy(tmp_path, k):
    import cupy

    layout = GridLayout((24, 12, 10), k)
    v = np.random.default_rng(k).standard_normal(layout.n_dofs)
    field = node_rows(cupy.asarray(v), k)
    expected = layout.to_dofs(v).reshape(-1, k)
    expected = expected[:, 0] if k == 1 else expected
    assert np.array_equal(np.asarray(field), expected)
    save_npy(tmp_path / "u.npy", field, slab_bytes=4096)
    assert (tmp_path / "u.npy").read_bytes() == npy_bytes(expected)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cantilever_3d", "two_load_cases", "clamped_beam_frequency"])
def test_gpu_run_streams_its_output(tmp_path, monkeypatch, name):
    """On the GPU: the output is read by slabs of at most 4 KiB, never made whole on the
    host, and design.vtu holds what design.npy and density.npy hold; its point fields are
    finite and nonzero (the frequency problem, which has no loads, has its modes and no
    displacement)."""
    problem = _problem(tmp_path, name, CASES.get(name))
    asked, whole = [0], []
    rows = RowSource.rows

    def recorded(self, i, j):
        asked[0] = max(asked[0], (j - i) * self.row_bytes)
        return rows(self, i, j)

    monkeypatch.setattr(vtu, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(rows_module, "SLAB_BYTES", 4096)
    monkeypatch.setattr(RowSource, "rows", recorded)
    monkeypatch.setattr(RowSource, "__array__", lambda self, *a, **k: whole.append(self))
    model = _run(problem, tmp_path / "out", array_module=None)
    assert model.path.xp.__name__ == "cupy"
    assert whole == [] and 4096 - 24 < asked[0] <= 4096
    m = meshio.read(tmp_path / "out" / "design.vtu")
    density = np.load(tmp_path / "out" / "density.npy")
    assert np.array_equal(m.cell_data["density"][0], density)
    assert np.array_equal(m.cell_data["design"][0], np.load(tmp_path / "out" / "design.npy"))
    assert m.point_data
    static = [k for k in m.point_data if k.split("_")[0] == "displacement"]  # one a case
    assert bool(static) == (name != "clamped_beam_frequency"), list(m.point_data)
    for field, v in m.point_data.items():
        assert np.isfinite(v).all() and np.abs(v).max() > 0, field


def test_picture_field_by_layers_equals_the_whole_coarsening(monkeypatch):
    """A 3D grid's picture coarsens densities kept on the device `step` cell layers at a
    time: the same block maxima as the whole field's, reading `step` layers at most."""
    from femopt.io import plots
    from femopt.mesh.mesh import StructuredGrid

    monkeypatch.setattr(plots, "PICTURE_CELLS", 50)
    grid = StructuredGrid((13, 8, 7), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    rho = recording(np.random.default_rng(2).random(13 * 8 * 7))
    expected, step = plots._coarsened(np.asarray(rho).reshape(7, 8, 13).T)
    assert step == 3
    got, got_step = plots._grid_field(grid, cell_rows(rho))
    assert got_step == step and np.array_equal(got, expected)
    assert rho.widest[0] == 3 * 13 * 8


@pytest.mark.parametrize("n", [0, 1000, 4096, 8192, 10_000])
def test_compressed_by_chunks_equals_compressing_the_whole(monkeypatch, n):
    """zlib blocks of 32 KiB made chunk by chunk (chunks of 1000 bytes, not a multiple
    of the block) are those of the whole array, an exact multiple of the block too."""
    import zlib

    monkeypatch.setattr(vtu, "CHUNK_BYTES", 1000)
    a = np.random.default_rng(n).random(n)
    data = a.tobytes()
    blocks = [zlib.compress(data[i:i + vtu.ZLIB_BLOCK])
              for i in range(0, len(data), vtu.ZLIB_BLOCK)]
    last = len(data) - (len(blocks) - 1) * vtu.ZLIB_BLOCK if blocks else 0
    header = np.array([len(blocks), vtu.ZLIB_BLOCK, last] + [len(b) for b in blocks],
                      np.uint64)
    assert vtu._compressed(vtu.cell_field(cell_rows(a))) == [header.tobytes()] + blocks
