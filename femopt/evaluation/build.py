"""A model from a problem file: read, validated, size-checked before anything is
allocated, and built (what ``femopt run``, ``validate``, ``check-gradients`` and the
Python API share, without the run's output machinery)."""

from __future__ import annotations

from pathlib import Path

from femopt.evaluation.model import Model
from femopt.plugins.manager import get_registry
from femopt.problem.load import read_problem
from femopt.problem.size import check_size
from femopt.problem.yamlload import gc_paused


def build_model(problem_file: str | Path, device: str | None = None,
                problem_dir: Path | None = None, distributed=None,
                array_module=None) -> Model:
    """Read, validate and build a problem; raises InputError/ProblemError on bad input.
    ``device`` (auto, cpu, gpu) overrides the file's ``device``; ``problem_dir`` is where
    relative mesh paths are read from (default: the problem file's folder);
    ``distributed`` a communicator (:mod:`femopt.parallel`) for a distributed run;
    ``array_module`` runs the device path on it (NumPy: its CPU twin)."""
    registry = get_registry()
    with gc_paused():  # a problem of 200,000 loads makes millions of small objects
        loaded = read_problem(problem_file, registry)
        check_size(loaded, device)  # before the mesh or anything else is allocated
        return Model(loaded, registry, device, problem_dir=problem_dir,
                     distributed=distributed, array_module=array_module)
