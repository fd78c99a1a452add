"""Shared fixtures: small problem files written from YAML text."""

from __future__ import annotations

import os
from pathlib import Path

# pytest -n auto runs one worker per core: a BLAS thread pool per worker on top of that
# oversubscribes the cores, and OpenBLAS's spinning threads then make small products (the
# multigrid's cell products) ten times slower. Set before anything imports NumPy.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest

SMALL_BEAM = """\
name: small_beam
mesh: {type: structured, shape: [12, 4], size: [12.0, 4.0]}
physics: {type: linear_elasticity}
supports:
  - region: {face: x_min}
    dofs: [x]
  - region: {point: [12.0, 0.0]}
    dofs: [y]
loads:
  - region: {point: [0.0, 4.0]}
    force: [0.0, -1.0]
filters:
  - {type: density, radius: 1.5}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.5}
optimizer: {type: oc, max_iter: 10}
"""


@pytest.fixture
def write_problem(tmp_path: Path):
    """Write YAML text to a problem file in tmp_path and return its path."""

    def write(text: str, name: str = "problem.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def pytest_collection_modifyitems(config, items):
    """Skip GPU tests where CuPy sees no CUDA device."""
    if not any("gpu" in item.keywords for item in items):
        return
    from femopt.backend import gpu_status

    ok, why = gpu_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"no GPU: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
