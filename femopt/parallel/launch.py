"""Starting a distributed run and stopping it when a rank fails.

- ``femopt run --ranks N problem.yaml`` checks the problem and the rank count on its own
  (:func:`check_ranks`: exit 2 naming the largest count that works, before any rank
  starts) and runs ``mpiexec -n N python -m femopt run problem.yaml ...``
  (:func:`launch`); ``--ranks 1`` runs the distributed path in this process, without
  MPI: the reference a run on N ranks repeats.
- Under ``mpiexec -n N`` (N > 1) ``femopt run`` and ``femopt resume`` run distributed by
  themselves (:func:`communicator`).
- Errors: bad input is found on every rank alike (rank 0 prints it, every rank exits 2);
  what rank 0 alone checks (the results directory) it tells the others
  (:class:`FollowerExit`). A failure during the run (:func:`fail`): rank 0 writes
  ``summary.json`` as in a one-process run, prints the error and aborts the job with its
  exit code; another rank waits :data:`GRACE` seconds (in case rank 0 failed alike and is
  reporting it), then prints ``femopt: rank R of N failed: ...`` and aborts with exit 1.
  The message is also left in the launcher's folder (MPI's abort can cut a rank's output
  on its way to mpiexec; the launcher then prints the copy, unless it came through).
  Either way every rank stops within seconds; checkpoints are written atomically, so the
  last one is intact. A rank that dies without a word (killed): mpiexec stops the others
  and reports the process; :func:`launch` names its rank (each rank leaves its PID in
  the folder :data:`PID_VARIABLE` names) and the last checkpoint, exit 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from femopt.errors import InputError
from femopt.parallel.comm import SERIAL, Comm, launched_size, world

PID_VARIABLE = "FEMOPT_RANK_PIDS"  # a folder where each rank leaves a file PID holding RANK
FEMOPT_CODES = (0, 1, 2, 130, 143)  # exit codes femopt's own ending of a job gives
FAIL_VARIABLE = "FEMOPT_TEST_FAIL_RANK"  # "RANK:ITERATION[:checkpoint]": that rank fails (tests)
GRACE = 3.0  # seconds a failing rank other than 0 leaves rank 0 to report a shared failure


class FollowerExit(Exception):
    """A rank other than 0 leaves with rank 0's exit code; rank 0 printed why."""

    def __init__(self, code: int):
        super().__init__(f"exit {code}")
        self.code = code


def communicator(ranks: int | None) -> Comm | None:
    """The communicator of this process's run: MPI's world under mpiexec with several
    ranks, the one-rank stand-in for ``--ranks 1``, else None (not distributed)."""
    if launched_size() > 1:
        try:
            comm = world()
        except ImportError:
            raise InputError("mpiexec started several ranks but mpi4py is not installed "
                             "(pip install mpi4py mpich)") from None
        except RuntimeError as exc:  # mpi4py is there, its MPI library is not
            raise InputError(f"mpiexec started several ranks but MPI cannot be loaded "
                             f"({exc}); pip install mpich, or point mpi4py at an MPI "
                             "library") from None
        if ranks is not None and ranks != comm.size:
            raise InputError(f"--ranks {ranks} under mpiexec with {comm.size} ranks: "
                             "give one or the other")
        pids = os.environ.get(PID_VARIABLE)
        if pids and Path(pids).is_dir():  # for the launcher's report of a rank that dies
            Path(pids, str(os.getpid())).write_text(str(comm.rank))
        return comm if comm.size > 1 else SERIAL
    if ranks == 1:
        return SERIAL
    return None


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the mpich wheel's), else the first on the PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    return shutil.which("mpiexec")


def check_ranks(problem: str, ranks: int, device: str | None) -> None:
    """Bad input before any rank starts: the problem, a problem the distributed path
    cannot take, or more ranks than the grid allows (InputError)."""
    import numpy as np

    from femopt.evaluation.build import build_model
    from femopt.parallel.partition import rank_plan
    from femopt.parallel.path import gpu_module

    if device == "gpu":  # no GPU stack: said before the model is built
        gpu_module(None, device)
    # the device path's NumPy twin: the same refusals and rank plan as on the GPU (or the
    # CPU), without touching a GPU in this process or asking one for the whole grid
    model = build_model(problem, device, distributed=SERIAL, array_module=np)
    rank_plan(model, ranks)
    if device is None and model.problem.device == "gpu":  # the file asks (--device gpu: above)
        gpu_module(model, device)


def launch(argv: list[str], ranks: int) -> int:
    """Run ``femopt ARGV`` on ``ranks`` ranks through mpiexec; its exit code."""
    exe = mpiexec()
    if exe is None:
        raise InputError(f"--ranks {ranks} needs mpiexec (pip install mpich mpi4py)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise InputError(f"--ranks {ranks} needs mpi4py (pip install mpi4py mpich)") from None
    cmd = [exe, "-n", str(ranks), sys.executable, "-m", "femopt", *argv]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # rank 0's progress lines as they come
    if ranks > (os.cpu_count() or 1):
        # more ranks than cores: MPICH's busy waiting yields the core (3 ranks on 2 cores
        # ran 1.6x faster so)
        env.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")
    with tempfile.TemporaryDirectory(prefix="femopt-ranks-") as pids:
        env[PID_VARIABLE] = pids
        code, died, said = _run_mpiexec(cmd, env)
        if code in FEMOPT_CODES or died is None:
            if code != 0:  # a message MPI's abort stopped on its way to mpiexec
                for f in sorted(Path(pids).glob("failed-*")):
                    text = f.read_text(errors="replace")
                    if text.strip() and text.strip().splitlines()[0] not in said:
                        print(text, file=sys.stderr, flush=True)
            return code
        rank = _read_rank(Path(pids), died[0])
        who = f"rank {rank} of {ranks}" if rank is not None else f"a rank of {ranks}"
        print(f"femopt: {who} died ({_how(died[1])}); mpiexec stopped the others"
              + _last_checkpoint(argv), file=sys.stderr, flush=True)
        return 1


def _run_mpiexec(cmd: list[str], env: dict) -> tuple[int, tuple[int, int] | None, str]:
    """Run mpiexec, passing its output on as it comes; its exit code, (pid, exit code) of
    a process that ended badly when mpiexec reports one (MPICH's hydra, on standard
    output), and the end of what came on standard error."""
    # mpiexec in a session of its own: a Ctrl-C at the terminal reaches this process
    # alone, which passes it on to mpiexec, which passes it to the ranks (MPICH's
    # hydra_pmi_proxy hit by the terminal's SIGINT too left the ranks hanging in their
    # next exchange)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen = {"stdout": b"", "stderr": b""}

    def relay(source, sink, key):
        raw = getattr(sink, "buffer", None)  # a text stream without one (a notebook's)
        while chunk := os.read(source.fileno(), 1 << 16):
            if raw is not None:
                raw.write(chunk)
                raw.flush()
            else:
                sink.write(chunk.decode(errors="replace"))
                sink.flush()
            seen[key] = (seen[key] + chunk)[-16384:]  # hydra's report ends the output

    readers = [threading.Thread(target=relay, args=(proc.stdout, sys.stdout, "stdout"),
                                daemon=True),
               threading.Thread(target=relay, args=(proc.stderr, sys.stderr, "stderr"),
                                daemon=True)]
    for t in readers:
        t.start()

    def forward(signum, frame):
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    for t in readers:
        t.join(timeout=5)
    text = (seen["stdout"] + seen["stderr"]).decode(errors="replace")
    m = re.search(r"PID (\d+) RUNNING AT.*?EXIT CODE: (\d+)", text, re.S)
    return (code, (int(m.group(1)), int(m.group(2))) if m else None,
            seen["stderr"].decode(errors="replace"))


def _read_rank(pids: Path, pid: int) -> int | None:
    try:
        return int((pids / str(pid)).read_text())
    except (OSError, ValueError):
        return None


def _how(code: int) -> str:
    """A process's exit code as mpiexec reports it, in words (> 128 or a signal number
    alone: killed by that signal)."""
    number = code - 128 if code > 128 else code
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:
        return f"exit code {code}"


def _last_checkpoint(argv: list[str]) -> str:
    """Where the last complete checkpoint of the run ``femopt ARGV`` is, when known."""
    from femopt.parallel.checkpoints import MANIFEST

    out = _out_dir(argv)
    if out is None or not (Path(out) / MANIFEST).is_file():
        return ""
    try:
        import json

        it = json.loads((Path(out) / MANIFEST).read_text())["iteration"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return (f"; the last checkpoint (iteration {it}) is intact: femopt resume {out} "
            "--ranks N")


def _out_dir(argv: list[str]) -> str | None:
    """The results directory of the run ``femopt ARGV``, when it names one."""
    if argv[:1] == ["resume"] and len(argv) > 1:
        return argv[1]
    if "--out" in argv[:-1]:
        return argv[argv.index("--out") + 1]
    return None


def strip_ranks(argv: list[str]) -> list[str]:
    """``argv`` without its ``--ranks N`` (or ``--ranks=N``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--ranks":
            skip = True
            continue
        if a.startswith("--ranks="):
            continue
        out.append(a)
    return out


def fail(comm: Comm, exc: BaseException, code: int, message: str | None) -> None:
    """Stop every rank after ``exc`` on this one (see the module docstring); never
    returns on more than one rank."""
    if comm.size == 1:
        return
    if not comm.root:
        time.sleep(GRACE)  # rank 0 may be reporting the same failure: it then aborts us
        text = message or "".join(traceback.format_exception(exc)).rstrip()
        message, code = f"femopt: rank {comm.rank} of {comm.size} failed: {text}", 1
    if message:
        print(message, file=sys.stderr, flush=True)
        pids = os.environ.get(PID_VARIABLE)
        try:  # the launcher's copy, should the abort cut the message off
            if pids and Path(pids).is_dir():
                Path(pids, f"failed-{comm.rank}").write_text(message)
        except OSError:
            pass  # the abort matters more than the copy
        time.sleep(0.5)  # for the message to reach mpiexec before the abort
    comm.abort(code)
    os._exit(code)


def injected_failure(comm: Comm, iteration: int, where: str = "") -> None:
    """A failure of one rank at one iteration, for tests of how the others stop: the
    environment variable :data:`FAIL_VARIABLE` = ``RANK:ITERATION`` (at the start of the
    design iteration), ``RANK:ITERATION:checkpoint`` (after writing its piece of the
    iteration's checkpoint, before the manifest) or ``RANK:ITERATION:kill`` (SIGKILL at
    the start of the design iteration)."""
    spec = os.environ.get(FAIL_VARIABLE)
    if not spec:
        return
    rank, it, *at = spec.split(":")
    if int(rank) == comm.rank and int(it) == iteration and at == ["kill"] and not where:
        os.kill(os.getpid(), signal.SIGKILL)  # a rank that dies without a word
    if int(rank) == comm.rank and int(it) == iteration and (at[0] if at else "") == where:
        from femopt.errors import RunError

        raise RunError(f"injected failure at design iteration {iteration} ({FAIL_VARIABLE})")


# a signal a rank of a distributed run received: [name, exit code, when]
_PENDING: list = []
SECOND_SIGNAL = 2.0  # seconds after the first, a second signal stops this rank at once


def catch_signals(comm: Comm) -> None:
    """On a rank of a distributed run (more than one rank): SIGINT and SIGTERM are noted,
    and every rank stops together at the end of the design iteration
    (:func:`collective_interrupt`), rank 0 writing the summary as a one-process run does.
    A second signal later than :data:`SECOND_SIGNAL` seconds stops the rank at once (and
    with it the job). A signal before this whose exception Python dropped is noted the
    same way. (SIGINT is taken over even where a background job ignores it: the launcher
    forwards what it is sent, ``kill -INT`` included.)"""
    from femopt.io.failure import EXIT_SIGINT, EXIT_SIGTERM, Interrupted, take_pending

    def handler(signum, frame):
        name, code = (("SIGINT", EXIT_SIGINT) if signum == signal.SIGINT
                      else ("SIGTERM", EXIT_SIGTERM))
        now = time.monotonic()
        if _PENDING and now - _PENDING[2] > SECOND_SIGNAL:
            raise Interrupted(name, code)
        if not _PENDING:
            _PENDING[:] = [name, code, now]

    if comm.size > 1:
        dropped = take_pending()
        if dropped is not None and not _PENDING:
            _PENDING[:] = [dropped.signal_name, dropped.exit_code, time.monotonic()]
        try:
            signal.signal(signal.SIGINT, handler)
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            pass


def collective_interrupt(comm: Comm) -> None:
    """Called by every rank once per design iteration: when any rank got a signal, every
    rank stops here (rank 0 with :class:`~femopt.io.failure.Interrupted`, the others with
    :class:`FollowerExit`)."""
    if comm.size == 1:
        return
    code = int(comm.max(_PENDING[1] if _PENDING else 0))
    if not code:
        return
    from femopt.io.failure import EXIT_SIGINT, Interrupted

    if comm.root:
        exc = Interrupted("SIGINT" if code == EXIT_SIGINT else "SIGTERM", code)
        exc.collective = True
        raise exc
    raise FollowerExit(code)
