"""What the tests of components on several paths share: building a model from a problem
dict, and checking a device path against the CPU path (values, gradients) and by Taylor
rates."""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from femopt.adjoint.taylor import check_model_gradients
from femopt.backend import to_host
from femopt.evaluation.model import Model
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem

# the grid twin's multigrid, tight enough for gradients equal to a direct solve's
GRID_SOLVER = {"type": "multigrid", "rtol": 1e-12, "coarsest_size": 60}


def build(data: dict, registry: Any = None, **kwargs) -> Model:
    """The model of ``data``: on the CPU unless ``array_module`` (the device path with
    those arrays), ``device`` or the problem's own ``device`` says otherwise (never the
    GPU by ``auto``, so that a CPU reference stays one on a machine with a GPU)."""
    registry = registry or get_registry()
    if kwargs.get("array_module") is None and "device" not in data:
        kwargs.setdefault("device", "cpu")
    return Model(parse_problem(yaml.safe_dump(data), "problem.yaml", registry), registry,
                 **kwargs)


def assert_same_as_cpu(cpu: Model, dev: Model, x: np.ndarray, values: float = 1e-9,
                       gradients: float = 1e-8) -> list[float]:
    """Values within ``values`` and gradients within ``gradients`` (relative, of the
    largest entry) of the CPU path's at ``x``; returns the CPU's values."""
    v_cpu, g_cpu = cpu.values_and_gradients(x)
    v_dev, g_dev = dev.values_and_gradients(dev.to_device(x))
    assert len(v_cpu) == len(v_dev)
    for a, b, ga, gb in zip(v_cpu, v_dev, g_cpu, g_dev):
        assert abs(b - a) <= values * abs(a), (a, b)
        err = np.abs(to_host(gb) - ga).max() / np.abs(ga).max()
        assert err <= gradients, err
    return v_cpu


def assert_taylor_rates(model: Model, x: np.ndarray, d: np.ndarray, h0: float = 1e-2) -> None:
    """Every function's Taylor rate in [1.9, 2.1] (a remainder at rounding level has no
    rate to measure)."""
    for check in check_model_gradients(model, model.to_device(x), model.to_device(d), h0=h0):
        if not check.result.exact:
            rates = check.result.rates
            assert 1.9 <= min(rates) and max(rates) <= 2.1, (check.name, rates)
