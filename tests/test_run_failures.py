"""A run that fails or is stopped once it has started: exit 1 (or 130/143 for a signal),
summary.json says why, the last checkpoint stays good and `femopt resume` reaches the
uninterrupted result. Disk full by fault injection, and on a real full tmpfs where the
machine lets us mount one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import femopt
from femopt.cli import main
from femopt.io.checkpoint import read_checkpoint
from test_checkpoint import PROBLEM

ENV = dict(os.environ, PYTHONPATH=str(Path(femopt.__file__).resolve().parents[1]))


def enospc(path="somewhere"):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: PROBLEM run to its end (24 MMA iterations)."""
    tmp = tmp_path_factory.mktemp("full")
    path = tmp / "problem.yaml"
    path.write_text(PROBLEM, encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp / "out"), "--quiet"]) == 0
    return tmp / "out"


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_disk_full_in_the_checkpoint_writer_exits_1_and_resume_finishes(
        write_problem, tmp_path, capsys, monkeypatch, uninterrupted):
    import femopt.io.run_files

    real = femopt.io.run_files.write_checkpoint

    def write(path, ck):
        if ck.iteration == 9:
            raise enospc(Path(path).with_name("checkpoint.h5.tmp"))
        real(path, ck)

    monkeypatch.setattr(femopt.io.run_files, "write_checkpoint", write)
    out = tmp_path / "out"
    code = main(["run", str(write_problem(PROBLEM)), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "No space left on device (ENOSPC)" in err and "checkpoint.h5.tmp" in err
    assert "Traceback" not in err
    s = summary(out)
    assert s["status"] == "failed" and "No space left on device" in s["message"]
    assert s["iterations"] == 9  # the iteration whose checkpoint failed
    assert read_checkpoint(out / "checkpoint.h5").iteration == 8  # the last good one
    monkeypatch.setattr(femopt.io.run_files, "write_checkpoint", real)  # space freed
    assert main(["resume", str(out), "--quiet"]) == 0
    assert np.array_equal(np.load(out / "design.npy"), np.load(uninterrupted / "design.npy"))
    assert summary(out)["objective"] == summary(uninterrupted)["objective"]


@pytest.mark.parametrize("target", ["femopt.io.plugin.write_vtu",
                                    "femopt.io.run_record.write_json_atomic",
                                    "femopt.io.results.HistoryWriter.write"])
def test_disk_full_in_any_writer_exits_1_without_a_traceback(target, write_problem, tmp_path,
                                                            capsys, monkeypatch):
    def full(*args, **kwargs):
        raise enospc(tmp_path / "out" / "file")

    monkeypatch.setattr(target, full)
    out = tmp_path / "out"
    code = main(["run", str(write_problem(PROBLEM)), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "No space left on device" in err and "Traceback" not in err
    if "json" not in target:  # the summary itself could not be written otherwise
        s = summary(out)
        assert s["status"] == "failed" and "No space left on device" in s["message"]


@pytest.mark.parametrize("fault, message", [
    ("nan", "function 'compliance' is not finite (nan) at design iteration 3"),
    ("memory", "out of memory"),
    ("input", "refused mid-run"),
])
def test_failures_after_the_start_exit_1(fault, message, write_problem, tmp_path, capsys,
                                          monkeypatch):
    from femopt.errors import InputError
    from femopt.objectives.compliance import Compliance

    real = Compliance.value
    calls = []

    def value(self, state):
        calls.append(1)
        if len(calls) == 3:
            if fault == "nan":
                return float("nan")
            if fault == "memory":
                raise MemoryError
            raise InputError("refused mid-run")
        return real(self, state)

    monkeypatch.setattr(Compliance, "value", value)
    out = tmp_path / "out"
    code = main(["run", str(write_problem(PROBLEM)), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert message in err and message in summary(out)["message"]
    assert summary(out)["status"] == "failed" and summary(out)["iterations"] == 2


# `python -m femopt` taking Ctrl-C as in a terminal: a test run started in the
# background (nohup, `&` in a script) ignores SIGINT, and its children inherit that
FEMOPT_WITH_CTRL_C = ("import runpy, signal, sys; signal.signal(signal.SIGINT, "
                      "signal.default_int_handler); sys.argv[0] = 'femopt'; "
                      "runpy.run_module('femopt', run_name='__main__', alter_sys=True)")


def _start(problem: Path, out: Path, args=()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FEMOPT_WITH_CTRL_C, "run", str(problem),
                             "--out", str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_writes_the_summary_and_says_how_to_resume(sig, code, write_problem,
                                                           tmp_path, uninterrupted):
    path = write_problem(PROBLEM)
    out = tmp_path / "out"
    proc = _start(path, out)
    for line in proc.stdout:
        if line.startswith("it ") and int(line.split()[1]) >= 5:
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    s = summary(out)
    assert s["status"] == "interrupted" and s["message"] == f"interrupted by {sig.name}"
    assert f"interrupted by {sig.name}; summary in {out / 'summary.json'}; continue with: " \
           f"femopt resume {out}" in err
    assert "Traceback" not in err
    assert main(["resume", str(out), "--quiet"]) == 0
    assert np.array_equal(np.load(out / "design.npy"), np.load(uninterrupted / "design.npy"))


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("size", ["16k", "64k", "128k"])
def test_a_real_full_disk_never_crashes(size, write_problem, tmp_path, uninterrupted):
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, size):
        pytest.skip("needs root and a mountable tmpfs")
    try:
        text = PROBLEM.replace("picture: false", "picture: true")
        proc = subprocess.run([sys.executable, "-m", "femopt", "run",
                               str(write_problem(text)), "--out", str(mnt / "out"),
                               "--quiet"], capture_output=True, text=True, env=ENV,
                              timeout=300)
        assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)  # never a signal
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 1:
            assert "No space left on device" in proc.stderr or "Unable to" in proc.stderr, \
                proc.stderr
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
            ck = mnt / "out" / "checkpoint.h5"
            if ck.is_file():  # space freed: resume reaches the uninterrupted result
                read_checkpoint(ck)
                assert main(["resume", str(mnt / "out"), "--quiet"]) == 0
                assert np.array_equal(np.load(mnt / "out" / "design.npy"),
                                      np.load(uninterrupted / "design.npy"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


SMALL = PROBLEM.replace("max_iter: 24", "max_iter: 2").replace("picture: false", "picture: true")


def test_a_rerun_removes_the_previous_runs_files_and_keeps_the_users(write_problem, tmp_path,
                                                                   capsys):
    out = tmp_path / "out"
    assert main(["run", str(write_problem(SMALL)), "--out", str(out), "--quiet"]) == 0
    assert main(["export", str(out), "--format", "stl"]) == 0
    (out / "notes.txt").write_text("mine")
    manifest = json.loads((out / "femopt-manifest.json").read_text())
    assert manifest["problem"] == "resumable" and manifest["complete"] is True
    assert {"design.vtu", "design.stl", "convergence.png", "checkpoint.h5"} <= \
        set(manifest["files"])
    text = SMALL.replace("picture: true", "picture: false").replace(
        "series_every: 4", "series_every: 0")
    assert main(["run", str(write_problem(text)), "--out", str(out), "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"design.stl", "convergence.png", "design.png", "series.h5"}.isdisjoint(names)
    assert {"notes.txt", "design.vtu", "summary.json"} <= names
    assert (out / "notes.txt").read_text() == "mine"


def test_a_directory_of_another_problem_is_refused_unless_forced(write_problem, tmp_path,
                                                                 capsys):
    out = tmp_path / "out"
    assert main(["run", str(write_problem(SMALL)), "--out", str(out), "--quiet"]) == 0
    other = write_problem(SMALL.replace("name: resumable", "name: other"), "other.yaml")
    before = sorted(p.name for p in out.iterdir())
    assert main(["run", str(other), "--out", str(out), "--quiet"]) == 2
    assert "holds the results of problem 'resumable', not 'other'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    assert main(["run", str(other), "--out", str(out), "--quiet", "--force"]) == 0
    assert summary(out)["problem"] == "other"


def test_a_directory_of_other_files_is_refused_unless_forced(write_problem, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    path = write_problem(SMALL)
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert "holds no femopt results" in capsys.readouterr().err
    assert main(["run", str(path), "--out", str(out), "--quiet", "--force"]) == 0
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0  # now it is ours
    assert (out / "thesis.tex").read_text() == "x"


@pytest.mark.parametrize("stem, expected", [("..", "problem"), ("a:b", "a_b")])
def test_the_default_directory_is_one_safe_component(stem, expected, write_problem, tmp_path,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_problem(SMALL.replace("name: resumable\n", ""), f"{stem}.yaml")
    assert main(["run", str(path), "--quiet", "--max-iter", "1"]) == 0
    assert (tmp_path / "results" / expected / "summary.json").is_file()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_python_drops_in_a_finalizer_is_raised_where_the_iteration_ends():
    """A signal whose exception the handler raises inside a finalizer (garbage collection
    runs them anywhere) is dropped by Python, printed as ignored; raise_pending raises it
    once, as the run does at the end of each iteration."""
    import os

    from femopt.io.failure import Interrupted, raise_pending, signals_interrupt

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs here, inside __del__
                pass

    with signals_interrupt():
        Finalized()
        with pytest.raises(Interrupted) as exc:
            raise_pending()
        assert exc.value.exit_code == 143 and exc.value.signal_name == "SIGTERM"
        raise_pending()  # raised once


def test_an_ignored_sigint_stays_ignored():
    """A run started in the background ignores Ctrl-C as its shell asked; Python's own
    handler is taken over, and both are given back after."""
    from femopt.io.failure import signals_interrupt

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with signals_interrupt():
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_distributed_rank_notes_a_signal_dropped_before_it_took_over():
    """A rank of a distributed run takes SIGINT and SIGTERM over once its communicator
    is up (launch.catch_signals); a signal whose exception Python dropped before that is
    noted for the collective stop at the end of the iteration, not raised by one rank
    alone."""
    import os
    import types

    from femopt.io.failure import raise_pending, signals_interrupt
    from femopt.parallel import launch

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with signals_interrupt():
            Finalized()
            launch.catch_signals(types.SimpleNamespace(size=2))
            assert launch._PENDING[:2] == ["SIGTERM", 143]
            raise_pending()  # taken: nothing for rank 0 alone
    finally:
        launch._PENDING.clear()
        for s, h in before.items():
            signal.signal(s, h)
