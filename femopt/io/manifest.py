"""A run owns its results directory: ``femopt-manifest.json`` names the problem whose
results it holds and every file femopt wrote there.

Before a run writes anything it claims the directory: a new or empty one, or one whose
manifest names the same problem, is its own; another problem's results, or files femopt
did not write, are refused unless ``--force``. The run then removes what the previous run
wrote (the manifest's list; for a directory from before manifests, femopt's own file
names), so that no stale picture or CAD file survives beside the new design, and records
what it writes as it ends. Files femopt did not write are never removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from femopt.errors import InputError

MANIFEST = "femopt-manifest.json"
# what runs wrote before there was a manifest
LEGACY_OUTPUTS = ("summary.json", "history.csv", "design.npy", "density.npy", "problem.yaml",
                  "checkpoint.h5", "series.xdmf", "series.h5", "convergence.png",
                  "design.png", "verify.json")
LEGACY_PREFIX = "design."
# folders femopt writes (a distributed run's per-rank pieces), removed with the files
FOLDERS = ("ranks",)


def _plain(name: Any) -> bool:
    """A file name of the directory itself (a manifest is a file anyone may edit)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\0" not in name)


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _legacy_problem(out_dir: Path) -> str | None:
    """The problem name of a results directory written before manifests, else None."""
    if not (out_dir / "problem.yaml").is_file():
        return None
    try:
        name = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))["problem"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def claim(out_dir: Path, problem: str, force: bool = False) -> None:
    """Refuse ``out_dir`` when it holds another problem's results or files femopt did not
    write (unless ``force``); nothing is written or removed here.

    Raises:
        InputError saying whose results the directory holds.
    """
    out_dir = Path(out_dir)
    if force or not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    manifest = read_manifest(out_dir)
    owner = manifest.get("problem") if manifest is not None else _legacy_problem(out_dir)
    if owner == problem:
        return
    if owner is not None:
        raise InputError(f"{out_dir} holds the results of problem {owner!r}, not {problem!r}; "
                         "choose another directory (--out) or pass --force to replace them")
    raise InputError(f"{out_dir} is not empty and holds no femopt results ({MANIFEST}); "
                     "choose another directory (--out) or pass --force to write there")


def previous_files(out_dir: Path, keep: tuple[Path, ...] = ()) -> list[str]:
    """The names in ``out_dir`` that :func:`clear_previous` removes, removing nothing: the
    files the previous run (or export) wrote there, by the manifest's list, or everything
    but the files that were there before femopt when that run ended early; femopt's own
    names in a directory from before manifests. ``keep`` (the problem file being run,
    when it lies there) is left out; so is everything of a directory that does not exist."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    manifest = read_manifest(out_dir)
    present = {p.name for p in out_dir.iterdir()
               if p.is_file() or p.is_symlink() or (p.is_dir() and p.name in FOLDERS)}
    if manifest is not None:
        listed = {n for n in manifest.get("files", []) if _plain(n)}
        foreign = {n for n in manifest.get("foreign", []) if _plain(n)}
        names = listed if manifest.get("complete") else present - foreign
    elif _legacy_problem(out_dir) is not None:
        names = {n for n in present if n in LEGACY_OUTPUTS or n.startswith(LEGACY_PREFIX)}
    else:
        names = set()
    names.discard(MANIFEST)
    kept = {p.resolve() for p in keep if p.exists()}
    return [n for n in sorted(names & present) if (out_dir / n).resolve() not in kept]


def clear_previous(out_dir: Path, keep: tuple[Path, ...] = ()) -> list[str]:
    """Remove the files the previous run (or export) wrote in ``out_dir``
    (:func:`previous_files`); ``keep`` (the problem file being run, when it lies there)
    stays. Returns the names removed."""
    out_dir = Path(out_dir)
    removed = previous_files(out_dir, keep)
    for name in removed:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


def start(out_dir: Path, problem: str) -> None:
    """Record, before the run writes, the problem and the files already there (they are
    not femopt's: a later run leaves them)."""
    out_dir = Path(out_dir)
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name != MANIFEST)
    _write(out_dir, {"problem": problem, "complete": False, "foreign": foreign, "files": []})


def record(out_dir: Path, extra: tuple[str, ...] = ()) -> None:
    """Record every file now in ``out_dir`` that was not there before femopt (``extra``:
    names to add, e.g. an export). Best effort: a full disk leaves the previous record."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if manifest is None:
        return
    foreign = set(manifest.get("foreign", []))
    files = {p.name for p in out_dir.iterdir() if p.name not in foreign and p.name != MANIFEST}
    files |= {n for n in extra if _plain(n)}
    manifest.update(complete=True, files=sorted(files))
    try:
        _write(out_dir, manifest)
    except OSError:
        pass


def _write(out_dir: Path, data: dict[str, Any]) -> None:
    tmp = out_dir / (MANIFEST + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, out_dir / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)


def default_dir_name(name: str) -> str:
    """One safe path component from a problem's name (the file name's stem when the file
    sets none): separators and control characters become '_'."""
    safe = "".join("_" if c in "/\\:" or ord(c) < 32 or ord(c) == 127 else c
                   for c in name).strip()
    return safe if safe not in ("", ".", "..") else "problem"
