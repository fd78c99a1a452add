"""Reading a results directory back: the problem file copy, its hash, the final design.

A run writes ``problem.yaml`` (the problem file, byte for byte) as soon as the results
directory exists, and ``design.npy`` (design variables) and ``density.npy`` (physical
densities) at the end. That is enough to rebuild the mesh, the regions and the model
without the original file, which is what ``femopt export`` and ``femopt resume`` do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from femopt.errors import InputError

PROBLEM_COPY = "problem.yaml"
SOURCE = "source.json"  # where the problem file was: its mesh paths are relative to it


def problem_hash(text: bytes) -> str:
    """SHA-256 of a problem file's bytes: what ties a checkpoint to its problem."""
    return hashlib.sha256(text).hexdigest()


@dataclass
class ResultDir:
    path: Path
    problem_file: Path
    problem_bytes: bytes

    def _source(self) -> dict:
        import json

        try:
            data = json.loads((self.path / SOURCE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def problem_dir(self) -> Path | None:
        """The folder of the problem file the run was started from (relative mesh paths
        are read from there); None for results written without the record."""
        d = self._source().get("problem_dir")
        return Path(d) if isinstance(d, str) else None

    @property
    def problem_name(self) -> str | None:
        """The run's problem name (a file without ``name:`` is named by its file, which
        the copy here does not keep); None without the record."""
        n = self._source().get("name")
        return n if isinstance(n, str) else None

    @property
    def sha256(self) -> str:
        return problem_hash(self.problem_bytes)

    def array(self, name: str, size: int | None = None) -> np.ndarray:
        """``name`` (an .npy file of the directory); InputError when missing or wrong."""
        p = self.path / name
        if not p.is_file():
            raise InputError(f"{self.path}: no {name} in this results directory (did the run "
                             "finish? `femopt resume` continues an interrupted one)")
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{p}: not a readable NumPy array ({exc})") from None
        if size is not None and a.shape != (size,):
            raise InputError(f"{p}: expected {size} values (one per cell), found shape "
                             f"{a.shape}: the file does not belong to this problem")
        return a


def open_result_dir(path: str | Path) -> ResultDir:
    """A results directory with its problem file copy; InputError otherwise."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: no such results directory")
    problem = p / PROBLEM_COPY
    if not problem.is_file():
        raise InputError(f"{p}: not a femopt results directory (no {PROBLEM_COPY})")
    return ResultDir(p, problem, problem.read_bytes())


def write_source(out_dir: Path, problem_dir: Path, name: str) -> None:
    """Record where the run's problem file is and the problem's name (``source.json``),
    so that export, verify and resume read its mesh from any working directory and name
    it as the run did."""
    import json

    from femopt.io.results import atomic_write

    with atomic_write(out_dir / SOURCE) as tmp:
        tmp.write_text(json.dumps({"problem_dir": str(Path(problem_dir).resolve()),
                                   "name": name}))
