"""The results of a distributed run: ``design.xdmf`` and the series over per-rank HDF5
pieces (virtual datasets), read back with meshio as one mesh equal to ``design.vtu``; the
per-rank checkpoints and their manifest, resumed on the same or another rank count, and
intact when a rank dies while writing one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import meshio
import numpy as np
import pytest

from femopt.mesh.structured import structured_grid
from femopt.parallel.output import PieceSeries, SlabBlocks, write_design
from femopt.parallel.orientation import Orientation
from femopt.parallel.checkpoints import read_manifest
from test_distributed import CANTILEVER, MBB, MMA_CASES, femopt, needs_mpi, same_run


class RankOf:
    """One rank of a communicator of ``size``, for writing each rank's piece in turn."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    @property
    def root(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        pass


def read_elsewhere(path: Path) -> meshio.Mesh:
    """``meshio.read(path)`` from another working directory: the pieces are found beside
    the virtual file, not in the current directory."""
    here = os.getcwd()
    os.chdir("/")
    try:
        return meshio.read(path)
    finally:
        os.chdir(here)


@pytest.mark.parametrize("shape,axis,bounds", [
    ((4, 3, 5), 0, [0, 1, 3, 4]), ((4, 3, 5), 1, [0, 2, 3]), ((4, 3, 5), 2, [0, 2, 5]),
    ((6, 4), 0, [0, 2, 4, 6]), ((6, 4), 1, [0, 1, 4])])
def test_pieces_read_as_one_mesh(shape, axis, bounds, tmp_path):
    """Every rank's piece (slabs cut along any axis) and the virtual file: meshio reads
    the points, cells and densities of the whole grid in femopt's order."""
    mesh = structured_grid(shape, [float(n) for n in shape])
    rho = np.random.default_rng(3).random(mesh.n_cells)
    orient = Orientation(shape, axis)
    internal = orient.cells_in(rho)
    per_layer = int(np.prod(orient.internal_shape[:-1]))
    size = len(bounds) - 1
    for r in reversed(range(size)):  # rank 0 last: it writes the virtual file
        blocks = SlabBlocks(RankOf(r, size), mesh, axis, bounds)
        write_design(tmp_path, blocks,
                     {"density": internal[bounds[r] * per_layer:bounds[r + 1] * per_layer]})
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == [
        f"design.{r:04d}.h5" for r in range(size)]
    m = read_elsewhere(tmp_path / "design.xdmf")
    assert np.array_equal(m.points[:, :mesh.dim], mesh.point_rows(0, mesh.n_nodes))
    assert np.array_equal(m.cells[0].data, mesh.cell_rows(0, mesh.n_cells))
    assert np.array_equal(m.cell_data["density"][0], rho)


def test_piece_series_steps_and_resume(tmp_path):
    """The series over pieces: two steps, then a resume after the first drops the second."""
    import meshio.xdmf

    shape, axis, bounds = (4, 6), 1, [0, 3, 6]
    mesh = structured_grid(shape, [4.0, 6.0])
    steps = {0: np.full(24, 0.5), 5: np.arange(24.0)}
    writers = [PieceSeries(tmp_path, SlabBlocks(RankOf(r, 2), mesh, axis, bounds))
               for r in (1, 0)]
    for it, rho in steps.items():
        for w, r in zip(writers, (1, 0)):
            w.add(it, rho[r * 12:(r + 1) * 12])  # axis y is the slowest: no reordering
    with meshio.xdmf.TimeSeriesReader(tmp_path / "series.xdmf") as reader:
        reader.read_points_cells()
        assert reader.num_steps == 2
        t, _, cell_data = reader.read_data(1)
    assert t == 5.0 and np.array_equal(cell_data["density"][0], steps[5])
    for r in (1, 0):
        w = PieceSeries(tmp_path, SlabBlocks(RankOf(r, 2), mesh, axis, bounds), keep_until=3)
        assert w.steps == [0]
    with meshio.xdmf.TimeSeriesReader(tmp_path / "series.xdmf") as reader:
        reader.read_points_cells()
        assert reader.num_steps == 1


@pytest.mark.parametrize("shape,axis,bounds", [((4, 6), 1, [0, 3, 6]),
                                                ((3, 4, 5), 2, [0, 2, 5]),
                                                ((5, 2, 3), 0, [0, 1, 3, 5])])
def test_series_xdmf_over_pieces_is_the_one_process_text(shape, axis, bounds, tmp_path):
    """The same grid, steps and information items: the series over pieces writes the
    one-process run's series.xdmf byte for byte, and design.xdmf's mesh elements are a
    step's (over its own HDF5 file)."""
    import xml.etree.ElementTree as ET

    from femopt.io.series import SeriesWriter

    mesh = structured_grid(shape, [float(n) for n in shape])
    info = {"problem": 'a "beam" <1> & co', "unit": "mm"}
    one, dist = tmp_path / "one", tmp_path / "dist"
    one.mkdir()
    dist.mkdir()
    single = SeriesWriter(one, mesh, info=info)
    size = len(bounds) - 1
    per_layer = int(np.prod(Orientation(shape, axis).internal_shape[:-1]))
    own = [(bounds[r + 1] - bounds[r]) * per_layer for r in range(size)]
    pieces = [(r, PieceSeries(dist, SlabBlocks(RankOf(r, size), mesh, axis, bounds),
                              info=info)) for r in reversed(range(size))]
    for it in (0, 4, 17):
        single.add(it, np.full(mesh.n_cells, 0.5))
        for r, w in pieces:
            w.add(it, np.full(own[r], 0.5))
    text = (one / "series.xdmf").read_bytes()
    assert (dist / "series.xdmf").read_bytes() == text
    assert text.count(b"<Grid Name=\"iteration") == 3
    for r in reversed(range(size)):
        write_design(dist, SlabBlocks(RankOf(r, size), mesh, axis, bounds),
                     {"density": np.zeros(own[r])})
    step = ET.parse(one / "series.xdmf").find(".//Grid[@Name='iteration 4']")
    design = ET.parse(dist / "design.xdmf").find(".//Grid[@Name='design']")
    for tag in ("Topology", "Geometry"):
        a, b = step.find(tag), design.find(tag)
        assert a.attrib == b.attrib and a[0].attrib == b[0].attrib
        assert a[0].text.replace("series.h5", "design.h5") == b[0].text


@needs_mpi
def test_design_xdmf_of_three_ranks_equals_one_process(write_problem, tmp_path):
    """``femopt run --ranks 3``'s design.xdmf (3 pieces) is the one-rank run's design.vtu
    (one process, the same solver): the same points and cells in the same order,
    densities within 1e-10."""
    path = write_problem(CANTILEVER)
    one, three = tmp_path / "one", tmp_path / "three"
    assert femopt("run", path, "--ranks", 1, "--out", one, "--quiet").returncode == 0
    proc = femopt("run", path, "--ranks", 3, "--out", three, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(list((three / "ranks").glob("design.*.h5"))) == 3
    vtu, xdmf = meshio.read(one / "design.vtu"), read_elsewhere(three / "design.xdmf")
    assert np.array_equal(xdmf.points, vtu.points)
    assert np.array_equal(xdmf.cells[0].data, vtu.cells[0].data)
    for name in ("density", "design"):
        assert np.allclose(xdmf.cell_data[name][0], vtu.cell_data[name][0], rtol=0,
                           atol=1e-10)
    same = meshio.read(three / "design.vtu")  # the gathered design of the same run
    assert np.array_equal(xdmf.cell_data["density"][0], same.cell_data["density"][0])


@needs_mpi
def test_resume_on_the_same_rank_count_is_the_uninterrupted_run(write_problem, tmp_path):
    """MMA (per-cell optimizer state in the pieces), two load cases: stopped after 3
    iterations and resumed on 2 ranks, the run repeats the uninterrupted one (iterations
    exact, objectives within 1e-10; the pieces keep the solves' warm starts)."""
    path = write_problem(MMA_CASES.replace("output: {picture: false}",
                                           "output: {picture: false, checkpoint_every: 1}"))
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert femopt("run", path, "--ranks", 2, "--out", whole, "--quiet").returncode == 0
    assert femopt("run", path, "--ranks", 2, "--out", part, "--quiet",
                  "--max-iter", 3).returncode == 0
    m = read_manifest(part)
    assert m["ranks"] == 2 and m["iteration"] == 3 and len(m["pieces"]) == 2
    assert m["bounds"][0] == 0 and m["bounds"][-1] == m["grid"][m["axis"]]
    assert {"xold1", "low", "upp"} <= set(m["per_cell"])
    assert sorted(p.name for p in (part / "ranks").glob("checkpoint-*")) == [
        "checkpoint-000003.0000.h5", "checkpoint-000003.0001.h5"]  # older ones removed
    proc = femopt("resume", part, "--ranks", 2, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((part / "summary.json").read_text())["resumed_from"] == 3
    same_run(whole, part)


@needs_mpi
def test_a_rank_dying_while_writing_a_checkpoint(write_problem, tmp_path):
    """Rank 1 fails after writing its piece of iteration 4's checkpoint, before the
    manifest: exit 1 naming rank 1, the manifest and pieces of iteration 3 intact, and the
    run resumes from them (on 2 ranks; a one-process resume is refused, naming them)."""
    path = write_problem(MBB)
    out = tmp_path / "f"
    proc = femopt("run", path, "--ranks", 2, "--out", out, "--quiet",
                  env={"FEMOPT_TEST_FAIL_RANK": "1:4:checkpoint"}, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "rank 1 of 2 failed" in proc.stderr
    m = read_manifest(out)  # every piece matches its hash
    assert m["iteration"] == 3
    proc = femopt("resume", out, "--quiet")
    assert proc.returncode == 2
    assert "distributed run on 2 rank(s)" in proc.stderr and "--ranks" in proc.stderr
    proc = femopt("resume", out, "--ranks", 2, "--quiet")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["resumed_from"] == 3 and s["iterations"] == 8


@needs_mpi
def test_a_corrupted_piece_is_named_on_every_rank_count(write_problem, tmp_path):
    """One byte of rank 1's piece changed: a resume on 1, 2 or 3 ranks exits 2 naming
    that piece (the same message), and writes nothing."""
    path = write_problem(MBB)
    out = tmp_path / "c"
    assert femopt("run", path, "--ranks", 2, "--out", out, "--quiet",
                  "--max-iter", 3).returncode == 0
    piece = out / "ranks" / "checkpoint-000003.0001.h5"
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 0xFF
    piece.write_bytes(bytes(data))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    said = f"{piece}: changed since {out / 'checkpoint.json'} was written"
    for ranks in (1, 2, 3):
        proc = femopt("resume", out, "--ranks", ranks, "--quiet", timeout=120)
        assert proc.returncode == 2, (ranks, proc.stderr)
        assert said in proc.stderr, (ranks, proc.stderr)
        assert "checkpoint-000003.0000.h5" not in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    piece.unlink()
    proc = femopt("resume", out, "--ranks", 3, "--quiet", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{piece}: missing (listed in {out / 'checkpoint.json'})" in proc.stderr


class GatheringRank(RankOf):
    """Rank ``rank`` of ``size`` whose gather hears ``others`` (rank -> what that rank
    found) and whose broadcast, off rank 0, hears ``verdict``."""

    def __init__(self, rank: int, size: int, others: dict | None = None, verdict=None):
        super().__init__(rank, size)
        self.others, self.verdict = others or {}, verdict

    def gather(self, obj):
        if not self.root:
            return None
        return [obj if r == self.rank else self.others.get(r) for r in range(self.size)]

    def bcast(self, obj):
        return obj if self.root else self.verdict


def _manifest_of(tmp_path: Path, n: int) -> list[Path]:
    (tmp_path / "ranks").mkdir()
    files, pieces = [], []
    for r in range(n):
        f = tmp_path / "ranks" / f"checkpoint-000002.{r:04d}.h5"
        f.write_bytes(bytes([r]) * 10)
        files.append(f)
        pieces.append({"file": f"ranks/{f.name}",
                       "sha256": hashlib.sha256(f.read_bytes()).hexdigest()})
    (tmp_path / "checkpoint.json").write_text(json.dumps({
        "format": 1, "ranks": n, "iteration": 2, "bounds": list(range(n + 1)),
        "pieces": pieces}))
    return files


def test_each_rank_hashes_its_share_of_the_pieces(tmp_path, monkeypatch):
    """Six pieces on three ranks: rank 1 hashes pieces 1 and 4 only; the first bad piece
    in the manifest's order is named on every rank, whichever rank found it."""
    from femopt.errors import InputError
    from femopt.parallel import checkpoints

    files = _manifest_of(tmp_path, 6)
    hashed: list[str] = []
    real = checkpoints.sha256
    monkeypatch.setattr(checkpoints, "sha256", lambda p: hashed.append(p.name) or real(p))
    m = read_manifest(tmp_path, GatheringRank(1, 3))
    assert len(m["pieces"]) == 6
    assert hashed == [files[1].name, files[4].name]
    hashed.clear()
    read_manifest(tmp_path)  # one process: every piece
    assert hashed == [f.name for f in files]
    files[4].write_bytes(b"changed")  # rank 0 of 2 hashes pieces 0, 2 and 4
    bad4 = f"{files[4]}: changed since"
    with pytest.raises(InputError, match=bad4):  # before rank 1's piece 5
        read_manifest(tmp_path, GatheringRank(0, 2, {1: (5, "five")}))
    with pytest.raises(InputError, match="^three$"):  # rank 1's piece 3 comes first
        read_manifest(tmp_path, GatheringRank(0, 2, {1: (3, "three")}))
    with pytest.raises(InputError, match="^three$"):  # off rank 0: rank 0's verdict
        read_manifest(tmp_path, GatheringRank(1, 2, verdict=(3, "three")))


def test_a_one_process_resume_is_refused_before_any_piece_is_read(tmp_path, monkeypatch):
    """``femopt resume`` without ranks of a distributed run's checkpoint: refused from
    the manifest alone (no piece hashed, a missing one not even looked for); a manifest
    whose piece lacks its hash is not a manifest."""
    from femopt.errors import InputError
    from femopt.io.run_files import read_checkpoint
    from femopt.parallel import checkpoints

    files = _manifest_of(tmp_path, 3)
    files[1].unlink()
    monkeypatch.setattr(checkpoints, "sha256", lambda p: pytest.fail(f"hashed {p}"))
    with pytest.raises(InputError, match="distributed run on 3 rank"):
        read_checkpoint(tmp_path, None)
    m = json.loads((tmp_path / "checkpoint.json").read_text())
    del m["pieces"][2]["sha256"]
    (tmp_path / "checkpoint.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="not a readable femopt checkpoint manifest"):
        read_checkpoint(tmp_path, None)


def test_a_changed_piece_is_refused(tmp_path):
    """A piece whose bytes differ from the manifest's hash: resume refuses, naming it."""
    from femopt.errors import InputError

    (tmp_path / "ranks").mkdir()
    (tmp_path / "ranks" / "checkpoint-000002.0000.h5").write_bytes(b"abc")
    (tmp_path / "checkpoint.json").write_text(json.dumps({
        "format": 1, "ranks": 1, "iteration": 2, "bounds": [0, 4],
        "pieces": [{"file": "ranks/checkpoint-000002.0000.h5", "sha256": "0" * 64}]}))
    with pytest.raises(InputError, match="checkpoint-000002.0000.h5: changed since"):
        read_manifest(tmp_path)


@needs_mpi
def test_a_killed_rank(write_problem, tmp_path):
    """Rank 1 killed (SIGKILL, no word from it): mpiexec stops the other, ``femopt run
    --ranks 2`` exits 1 naming rank 1, and the last checkpoint is intact."""
    path = write_problem(MBB.replace("max_iter: 8", "max_iter: 50"))
    out = tmp_path / "k"
    proc = femopt("run", path, "--ranks", 2, "--out", out, "--quiet",
                  env={"FEMOPT_TEST_FAIL_RANK": "1:4:kill"}, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "femopt: rank 1 of 2 died (killed by SIGKILL)" in proc.stderr
    assert "the last checkpoint (iteration 3) is intact" in proc.stderr
    assert read_manifest(out)["iteration"] == 3
