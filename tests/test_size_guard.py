"""The size guard: a problem that cannot fit in memory is refused from the file alone,
in validate as in run, before the mesh is built, with both numbers."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from conftest import SMALL_BEAM
from femopt.cli import main
from femopt.problem import size

GIB = 2**30


def grid(shape: str) -> str:
    return SMALL_BEAM.replace("shape: [12, 4]", f"shape: {shape}")


@pytest.fixture
def no_mesh_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the grid was built")

    monkeypatch.setattr("femopt.mesh.plugin.structured_grid", refuse)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_3000_by_3000_grid_is_refused_on_a_4_gib_machine(command, write_problem, tmp_path,
                                                            capsys, monkeypatch, no_mesh_built):
    monkeypatch.setattr(size, "available_memory", lambda: 4 * GIB)
    path = write_problem(grid("[3000, 3000]"))
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code = main([command, str(path)] + (["--out", str(out)] if command == "run" else []))
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2
    # 9e6 cells x 8,500 bytes + 100 MiB = 71.34 GiB
    assert f"{path}:2:33: mesh.shape: the problem needs about 71.34 GiB of memory on the " \
           "CPU path (9,000,000 cells x 8,500 bytes per cell, estimated) but 4.00 GiB are " \
           "available" in err, err
    assert seconds < 5 and not out.exists()


def test_ten_billion_cells_are_refused_on_any_machine(write_problem, capsys, no_mesh_built):
    code = main(["validate", str(write_problem(grid("[100000, 100000]")))])
    assert code == 2
    needed = re.search(r"needs about ([\d.,]+) TiB", capsys.readouterr().err)
    assert float(needed[1].replace(",", "")) == pytest.approx(77.31, abs=0.01)


def test_a_grid_that_fits_is_not_refused(write_problem, capsys, monkeypatch):
    monkeypatch.setattr(size, "available_memory", lambda: 4 * GIB)
    text = grid("[200, 100]").replace("size: [12.0, 4.0]", "size: [200.0, 100.0]")
    assert main(["validate", str(write_problem(text))]) == 0


def test_the_estimate_follows_the_path(write_problem, monkeypatch):
    from femopt.plugins.manager import get_registry
    from femopt.problem.load import read_problem

    loaded = read_problem(write_problem(grid("[10, 20, 30]").replace(
        "size: [12.0, 4.0]", "size: [1.0, 2.0, 3.0]")), get_registry())
    cpu = size.estimate(loaded, "cpu")
    gpu = size.estimate(loaded, "gpu")
    assert (cpu.cells, cpu.dim, cpu.bytes_per_cell) == (6000, 3, 38_000)
    # a point load's nonzeros take nothing per cell: the results phase, three masks still
    # held and two more (the fields stream from the device), is the largest
    assert gpu.bytes_per_cell == 3 * 3 + 2 == 11
    assert gpu.bytes == size.BASE_BYTES + 6000 * 11
    arrays = size.gpu_host_arrays(3, 2)
    assert sum(arrays["loads"].values()) == 0
    assert sum(arrays["set-up"].values()) == 9
    assert sum(arrays["results"].values()) == 3 * 3 + 2
    assert size.gpu_host_bytes_per_cell(1, 1) == 3 + 2


POINT_LOAD = "{region: {point: [0.0, 4.0]}, force: [0.0, -1.0]}"


def _cases(n: int, load: str = POINT_LOAD) -> str:
    """SMALL_BEAM on a grid of 2000 x 1000 cells with ``n`` load cases of one ``load``
    (a YAML flow mapping) each."""
    cases = "".join(f"  - loads: [{load}]\n" for _ in range(n))
    text = grid("[2000, 1000]")
    start = text.index("loads:\n")
    end = text.index("filters:")
    return text[:start] + "load_cases:\n" + cases + text[end:]


@pytest.mark.parametrize("n_cases", [1, 2, 8])
def test_the_gpu_estimate_counts_loads_by_their_nonzeros(n_cases, write_problem):
    """A point load in every case: the estimate is that of one case (its nonzeros lie on
    a point, not on n_dofs x n_cases); body loads count their nonzeros per dof and case
    and their sum per body load; a traction its vector while its nonzeros are taken."""
    from femopt.plugins.manager import get_registry
    from femopt.problem.load import read_problem

    def estimate(text: str) -> size.SizeEstimate:
        loaded = read_problem(write_problem(text), get_registry())
        assert len(loaded.problem.load_cases) == n_cases
        return size.estimate(loaded, "gpu")

    point = estimate(_cases(n_cases))
    assert point.cells == 2_000_000 and point.bytes_per_cell == 3 * 2 + 2 == 8
    body = estimate(_cases(n_cases, "{body: true, force: [0.0, -1.0]}"))
    k, b = 2, n_cases
    held = 8 * (1 + n_cases) * k
    assert body.bytes_per_cell == max(16 * b * k + (17 * b + 8) * k,
                                      held + 32 * k + 3 * k, held + 3 * k + 2)
    traction = estimate(_cases(n_cases, "{region: {face: y_max}, traction: [0.0, -1.0]}"))
    assert traction.bytes_per_cell == 16 * k + 2 == 34
    # a nodal load on a box may cover every node: counted as a body load; on a box and
    # a face it lies on that face
    box = "{min: [0.0, 0.0], max: [2000.0, 1000.0]}"
    volume = estimate(_cases(n_cases, f"{{region: {{box: {box}}}, force: [0.0, -1.0]}}"))
    assert volume.bytes_per_cell == body.bytes_per_cell
    face = estimate(_cases(n_cases, f"{{region: {{box: {box}, face: y_max}}, "
                                    "force: [0.0, -1.0]}"))
    assert face.bytes_per_cell == point.bytes_per_cell


def test_available_memory_is_read():
    avail = size.available_memory()
    assert avail is None or 0 < avail < 2**60


def test_a_nodal_load_keeps_only_its_nonzero_components(write_problem):
    """force: [0, -1] on a box of nodes stores one nonzero per node, not two."""
    from femopt.evaluation.build import build_model

    text = grid("[12, 4]")
    start, end = text.index("loads:\n"), text.index("filters:")
    text = (text[:start] + "loads:\n  - region: {box: {min: [2.0, 1.0], max: [4.0, 2.0]}}\n"
            "    force: [0.0, -1.0]\n" + text[end:])
    model = build_model(write_problem(text), device="cpu")
    nz = model.load_nonzeros
    assert len(nz.index) == 3 * 2 and np.all(nz.index % 2 == 1) and np.all(nz.values == -1)
