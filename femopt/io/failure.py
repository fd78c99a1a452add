"""How a run that stops before its end is reported: the summary's status and message, and
the error the command line sees.

Bad input is found before the first iteration (exit 2). Whatever happens once the run
has started is a run failure (exit 1, summary.json ``status: failed``): a full disk, a
solver breakdown, non-finite values, memory running out, a plugin that raises. SIGINT
(Ctrl-C) and SIGTERM end the run the same orderly way, with ``status: interrupted`` and
exit codes 130 and 143; the last checkpoint stays as it was (checkpoints are written to a
temporary file and renamed).
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from femopt.errors import FemoptError, RunError

EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a command. A KeyboardInterrupt, so that no ``except
    Exception`` in a plugin or guard swallows it; ``out_dir`` is set once a run has
    written its summary."""

    def __init__(self, signal_name: str = "SIGINT", exit_code: int = EXIT_SIGINT):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.out_dir: Path | None = None
        self.checkpoint: Path | None = None


# the signal last raised by :func:`signals_interrupt`'s handler: Python drops an exception
# raised in a finalizer or a weakref callback (garbage collection runs them anywhere), so
# the run raises it again at the end of its iteration (:func:`raise_pending`)
_pending: list[Interrupted] = []


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Interrupted` as Ctrl-C raises
    KeyboardInterrupt, so a terminated run still writes its summary; Ctrl-C raises an
    :class:`Interrupted` too where SIGINT has Python's own handler (not where it is
    ignored, as in a background job), which :func:`raise_pending` raises again should
    Python have dropped it."""

    def on_signal(signum, frame):
        exc = (Interrupted("SIGTERM", EXIT_SIGTERM) if signum == signal.SIGTERM
               else Interrupted("SIGINT", EXIT_SIGINT))
        _pending[:] = [exc]
        raise exc

    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_signal)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _pending.clear()


def raise_pending() -> None:
    """Raise the signal's :class:`Interrupted` again if Python dropped it (raised in a
    finalizer or a weakref callback during garbage collection, it is printed as "ignored"
    and the run goes on); called where an iteration ends. Once it has stopped the run,
    it is not raised again."""
    exc = take_pending()
    if exc is not None:
        raise exc


def take_pending() -> Interrupted | None:
    """The signal's :class:`Interrupted` that Python may have dropped, taken (None: none):
    for :func:`raise_pending`, or a distributed run's ranks, which stop together."""
    return _pending.pop() if _pending else None


def interrupted_message(exc: BaseException) -> str:
    """What the command line prints for an interrupted command: the signal, where the
    summary is, and how to go on."""
    name = getattr(exc, "signal_name", "SIGINT")
    out_dir = getattr(exc, "out_dir", None)
    if out_dir is None:
        return f"interrupted by {name}"
    line = f"interrupted by {name}; summary in {out_dir / 'summary.json'}"
    ck = getattr(exc, "checkpoint", None)
    if ck is not None and ck.suffix == ".json":  # a distributed run's: on any rank count
        return line + f"; continue with: femopt resume {out_dir} --ranks N"
    if ck is not None:
        return line + f"; continue with: femopt resume {out_dir}"
    return line + " (no checkpoint written yet: run the problem again)"


def run_status(exc: BaseException) -> str:
    """summary.json's ``status`` of a run that raised ``exc``."""
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


def describe(exc: BaseException) -> str:
    """The reason a run stopped, as summary.json and the command line say it."""
    if isinstance(exc, KeyboardInterrupt):
        name = getattr(exc, "signal_name", "SIGINT")
        return f"interrupted by {name}"
    if isinstance(exc, FemoptError):
        return str(exc)
    if isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
        what = f"cannot write {exc.filename}: " if exc.filename else "input/output error: "
        return f"{what}{exc.strerror or exc}" + (f" ({code})" if code else "")
    if isinstance(exc, MemoryError):  # a GPU pool's says what the pools held
        said = f": {exc}" if str(exc) else ""
        return f"out of memory during the run (MemoryError{said}); use a coarser mesh"
    return f"{type(exc).__name__}: {exc}"


def failure_details(exc: BaseException) -> dict:
    """What summary.json keeps of a failure besides its message: the residual history of
    a Krylov solve that did not converge (``solver_residuals``), found on the error or on
    the one it was raised from."""
    seen = exc
    while seen is not None:
        residuals = getattr(seen, "residuals", None)
        if residuals:
            return {"solver_residuals": [float(r) for r in residuals]}
        seen = seen.__cause__ or seen.__context__
    return {}


@contextmanager
def write_errors() -> Iterator[None]:
    """Turn an OSError of a writer (a full disk) into a RunError that names the file,
    so that no plugin guard on the way up mistakes it for the plugin's own failure."""
    try:
        yield
    except OSError as exc:
        raise RunError(describe(exc)) from exc


@contextmanager
def run_failures(out_dir: Path) -> Iterator[None]:
    """Around a run that has started (its results directory exists): every error
    becomes a run failure (exit 1) or, for a signal, an :class:`Interrupted` that knows
    the directory and its checkpoint."""
    from femopt.io.checkpoint import CHECKPOINT

    try:
        yield
    except KeyboardInterrupt as exc:
        out = exc if isinstance(exc, Interrupted) else Interrupted()
        out.out_dir = Path(out_dir)
        ck = Path(out_dir) / CHECKPOINT
        pieces = Path(out_dir) / "checkpoint.json"  # a distributed run's manifest
        out.checkpoint = ck if ck.is_file() else pieces if pieces.is_file() else None
        raise out from None
    except FemoptError as exc:
        if exc.exit_code == 1:
            raise
        raise RunError(str(exc)) from exc
    except (Exception, MemoryError) as exc:  # noqa: BLE001 - reported, never a traceback
        raise RunError(describe(exc)) from exc
