"""What the command line tells a user: a calm note without a GPU, the solver it picked,
the files written and the next commands, logging with -v, light imports for --help and
validate, and a results directory whose series starts at the initial design and carries the
problem's name and unit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import SMALL_BEAM
from femopt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_names_its_solver_lists_its_files_and_the_next_commands(write_problem,
                                                                        tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", str(write_problem(SMALL_BEAM)), "--out", str(out),
                 "--max-iter", "3", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert [ln for ln in lines if ln.startswith("femopt: solver ")] == [
        "femopt: solver direct (SuperLU) for a 2D grid of 124 free dofs, the default "
        "(set solver: to choose another)"]
    start = lines.index(f"wrote {out}/:")
    listed = [ln.split()[0] for ln in lines[start + 1:lines.index("next:")]]
    assert listed[:3] == ["summary.json", "history.csv", "design.vtu"]
    assert set(listed) == {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert f"  femopt export {out} --format dxf --verify" in text
    assert f"  paraview {out / 'design.vtu'}" in text
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["problem"], summary["unit"], summary["dim"]) == ("small_beam", "mm", 2)


def test_the_series_starts_at_the_initial_design_and_names_problem_and_unit(
        write_problem, tmp_path):
    import meshio

    out = tmp_path / "res"
    text = SMALL_BEAM + "unit: cm\noutput: {series_every: 2, picture: false}\n"
    assert main(["run", str(write_problem(text)), "--out", str(out), "--max-iter", "5",
                 "--quiet", "--device", "cpu"]) == 0
    with meshio.xdmf.TimeSeriesReader(out / "series.xdmf") as reader:
        points, cells = reader.read_points_cells()
        steps = [reader.read_data(k) for k in range(reader.num_steps)]
    assert points.shape == (13 * 5, 2) and cells[0].data.shape == (48, 4)
    assert [t for t, _, _ in steps] == [0.0, 2.0, 4.0, 5.0]
    first = steps[0][2]["density"][0]
    assert np.allclose(first, 0.5)  # the initial design: uniform at the volume fraction
    assert np.allclose(steps[-1][2]["density"][0], np.load(out / "density.npy"))
    xdmf = (out / "series.xdmf").read_text()
    assert '<Information Name="unit" Value="cm"/>' in xdmf
    assert '<Information Name="problem" Value="small_beam"/>' in xdmf


def test_no_gpu_is_one_calm_line(monkeypatch):
    import femopt.backend as backend

    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ModuleNotFoundError
    ok, what = backend.gpu_status()
    assert not ok and what == "CuPy is not installed (pip install 'femopt[gpu]' for an NVIDIA GPU)"
    device, note = backend.resolve_device("auto")
    assert device == "cpu" and note.startswith("running on the CPU; no GPU: CuPy is not")
    assert "ModuleNotFoundError" not in note


def test_verbose_logs_through_the_logging_module(write_problem, tmp_path, capsys):
    assert main(["-vv", "validate", str(write_problem(SMALL_BEAM))]) == 0
    err = capsys.readouterr().err
    assert "femopt.solvers.choice: DEBUG: default solver for a 2D grid of 124 free dofs" in err
    assert main(["validate", str(write_problem(SMALL_BEAM))]) == 0
    assert "DEBUG" not in capsys.readouterr().err


def test_help_and_validate_import_nothing_heavy():
    """--help imports neither NumPy nor matplotlib; validate no matplotlib, h5py or
    scikit-image (what `python -X importtime` showed as the slow imports). Wall times
    are in docs/benchmarks.md: a timed test would fail on a shared machine."""
    code = ("import sys; from femopt.cli import build_parser; build_parser(); "
            "print(' '.join(sorted(m for m in ('numpy', 'matplotlib', 'scipy') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ""
    code = ("import sys; from femopt.cli import main; main(['validate', "
            "'problems/mbb_beam.yaml']); print('heavy:', *sorted(m for m in "
            "('matplotlib', 'h5py', 'skimage', 'trimesh') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.splitlines()
    assert out[0].endswith("optimizer oc)") and out[-1] == "heavy:"
