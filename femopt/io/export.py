"""``femopt export``: one exporter applied to a finished results directory, with an
optional re-analysis of the exported part (``--verify``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from femopt.errors import InputError
from femopt.io.results import (DesignResult, atomic_write, kept_cells, physics_thickness,
                                write_json_atomic)
from femopt.io.resultdir import open_result_dir
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem


def make_exporter(fmt: str, settings: dict[str, Any]):
    """The exporter ``fmt`` with those of ``settings`` its Options know."""
    registry = get_registry()
    try:
        entry = registry.get("exporter", fmt)
    except KeyError as exc:
        raise InputError(exc.args[0]) from None
    fields = entry.cls.Options.model_fields
    try:
        options = entry.cls.Options.model_validate(
            {k: v for k, v in settings.items() if k in fields and v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"--{err['loc'][0]}: {err['msg']} (got {err['input']!r})") from None
    return registry.create("exporter", fmt, options)


def write_atomic(exporter, result, path: Path) -> dict[str, Any] | None:
    """Export to a temporary file beside ``path``, then rename: a failure leaves nothing
    behind and never a half-written ``path``."""
    with atomic_write(path, path.with_name(f".{path.stem}.tmp{path.suffix}")) as tmp:
        with get_registry().guard("exporter", exporter.name, "export()"):
            return exporter.export(result, tmp)


def load_design(result_dir) -> tuple[Any, DesignResult]:
    """The problem of a results directory and its final design as a DesignResult."""
    rd = open_result_dir(result_dir)
    registry = get_registry()
    loaded = parse_problem(rd.problem_bytes.decode("utf-8"), str(rd.problem_file), registry)
    from femopt.mesh.plugin import locate

    sec = loaded.sections["mesh"]
    source = registry.create("mesh", sec.type, sec.options)
    # results without the record: relative to the working directory, as they were
    mesh = locate(source, rd.problem_dir or Path("."), loaded.problem.unit).build()
    density = rd.array("density.npy", mesh.n_cells)
    problem = loaded.problem
    result = DesignResult(mesh, {"density": density}, {}, problem.unit,
                          kept_cells(problem, mesh), physics_thickness(problem),
                          problem.name or rd.problem_name or rd.path.name)
    return loaded, result


def export_result(result_dir: str | Path, fmt: str, *, threshold: float | None = None,
                  smooth: int | None = None, thickness: float | None = None,
                  out: str | Path | None = None, force: bool = False,
                  verify: bool = False) -> dict[str, Any]:
    """Export the final design of ``result_dir``; returns what was written and measured.

    Defaults come from the problem file's ``output`` section. Bad input (no design, an
    unknown format, a threshold outside (0, 1), an output file that exists without
    ``force``) raises InputError before anything is written.
    """
    loaded, result = load_design(result_dir)
    o = loaded.problem.output
    settings = {"threshold": o.threshold if threshold is None else threshold,
                "smooth": o.smooth if smooth is None else smooth,
                "thickness": o.thickness if thickness is None else thickness}
    exporter = make_exporter(fmt, settings)
    path = Path(out) if out is not None else Path(result_dir) / f"design{exporter.suffix}"
    if path.exists() and not force:
        raise InputError(f"{path} exists; use --force to overwrite it")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such directory")
    if verify and not hasattr(exporter.options, "threshold"):
        raise InputError(f"--verify re-analyses a CAD part; format {fmt} is not one")
    info = write_atomic(exporter, result, path) or {}
    report: dict[str, Any] = {"format": fmt, "file": str(path), **info}
    if verify:
        from femopt.io.cad import build_part
        from femopt.io.verify import verify_part

        part = build_part(result, exporter.options, extrude_2d=False)
        report["verify"] = verify_part(Path(result_dir), part)
        write_json_atomic(Path(result_dir) / "verify.json", report)
    from femopt.io.manifest import record

    record(Path(result_dir))  # a later run into this directory removes the export too
    return report
