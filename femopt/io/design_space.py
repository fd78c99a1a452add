"""Will the design files fit? Before a run starts, the bytes the formats of
``output.formats`` surely write (their exporters' ``size_bound``: the vtu and vti writers
know it from the cells, nodes and fields of a design written uncompressed) against the
free space of the results directory's file system. Only what is certain is counted:
the mesh's arrays, the densities and the design variables, the state of each load case,
each value at its narrowest type; a compressed design counts nothing. The files a
fresh run removes first (the previous run's) count as free; on resume nothing does."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from femopt.errors import InputError
from femopt.io.vti import vti_bytes


def design_values(model: Any) -> tuple[int, int]:
    """(values per cell, values per node) of the design file's fields that are certain:
    the densities and the design variables per cell; the state of each load case per node
    where a function reads it, a 2D vector padded to 3 components. A shape run's fields
    and eigenvectors are not counted."""
    if model.shape:
        return 0, 0
    k = model.physics.dofs_per_node
    per_node = (3 if k == 2 else k) * len(model.case_names) if model.static else 0
    return 2, per_node


def design_bytes(model: Any) -> dict[str, int]:
    """The design files of ``output.formats`` by name and a lower bound of their bytes
    (files whose size is not known beforehand are left out)."""
    cell_values, point_values = design_values(model)
    out: dict[str, int] = {}
    for fmt in model.problem.output.formats:
        cls = model.registry.get("exporter", fmt).cls
        bound = getattr(cls, "size_bound", None)
        if bound is None:
            continue
        with model.registry.guard("exporter", fmt, "size_bound()"):
            size = int(bound(model.mesh, cell_values, point_values))
        if size > 0:
            out[f"design{cls.suffix}"] = size
    return out


def free_space(out_dir: Path) -> tuple[Path, int]:
    """The nearest existing folder of ``out_dir`` (itself, or a parent) and the bytes
    free on its file system."""
    p = Path(out_dir).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p, int(shutil.disk_usage(p).free)


def size_text(n: int) -> str:
    """``n`` bytes, for a message: exact below a megabyte."""
    if n >= 10**9:
        return f"{n / 1e9:.1f} GB"
    if n >= 10**6:
        return f"{n / 1e6:.1f} MB"
    return f"{n:,} bytes"


def freed_bytes(out_dir: Path, names: Iterable[str]) -> int:
    """The bytes that removing ``names`` from ``out_dir`` gives back: a file's size, a
    folder's files; nothing for a link, or a file linked elsewhere as well."""
    total = 0
    for name in names:
        path = Path(out_dir) / name
        files = [path] if not path.is_dir() or path.is_symlink() else \
            [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            try:
                st = f.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                total += st.st_size
    return total


def check_design_space(model: Any, out_dir: Path, freed: Iterable[str] = (),
                       resuming: bool = False) -> None:
    """Refuse a run whose design files surely do not fit in ``out_dir``'s free space.
    ``freed``: the names in ``out_dir`` the run removes before it writes (a fresh run,
    the previous run's files: :func:`femopt.io.manifest.previous_files`); their bytes
    count as free. A file the run replaces counts nothing: a design is written beside
    it and renamed over it. ``resuming``: the directory and its problem are fixed, so
    the only advice is to free space.

    Raises:
        InputError giving the estimate and the free space, and for a fresh run on a
        structured grid written otherwise than as vti, what ``formats: [vti]`` would take
        when that fits.
    """
    need = design_bytes(model)
    if not need:
        return
    where, free = free_space(out_dir)
    credit = freed_bytes(out_dir, freed)
    free += credit
    total = sum(need.values())
    if total <= free:
        return
    files = ", ".join(f"{name} {size_text(size)}" for name, size in need.items())
    msg = (f"output.formats: the design files need at least {size_text(total)} ({files}); "
           f"{where} has {size_text(free)} free")
    if credit:
        msg += f" (counting {size_text(credit)} of the previous run's files, removed first)"
    grid = model.mesh.grid
    vti = vti_bytes(grid, *design_values(model)) if grid is not None else None
    if resuming:
        msg += ". Free space there to resume"
    elif vti is not None and set(need) != {"design.vti"} and vti <= free:
        msg += (f". The design of a structured grid takes less as VTK image data: "
                f"`formats: [vti]` writes no points or cells (at least {size_text(vti)})")
    else:
        msg += ". Free space there or choose another directory (--out)"
    raise InputError(msg)
