"""The CUDA kernels generated from function integrands (femopt.adjoint.integrand_codegen):
the source is deterministic, has the expected kernels and parameters, and is compiled
once per key; on the CPU the source runs as host C++ (CUDA keywords defined away, one
"thread" walking every item) and equals the NumPy route; with nvcc it compiles as CUDA;
on a GPU the kernels equal the NumPy route."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from femopt.adjoint import integrand_codegen as ic
from femopt.backend import kernels
from femopt.objectives.stress import StressPNorm
from femopt.plugins.manager import build_manager
from test_integrand_functions import ELASTIC_2D, ELASTIC_3D, HEAT_2D, PROBES, NodalMean, build

CASES = {  # name: (problem, function section)
    "stress-2d": (ELASTIC_2D, "{type: stress_pnorm, p: 8.0, q: 0.5, region: "
                  "{box: {min: [0.0, 0.0], max: [8.0, 6.0]}}}"),
    "stress-3d": (ELASTIC_3D, "{type: stress_pnorm, p: 6.0, q: 0.7}"),
    "cellwise-pnorm": (ELASTIC_2D, "{type: probe_pnorm_cell}"),
    "energy-ratio-quadrature": (ELASTIC_2D, "{type: probe_ratio_quadrature}"),
    "nodal-mean-data": (HEAT_2D, "{type: nodal_mean, region: {face: x_max}}"),
}


@pytest.fixture(scope="module")
def registry():
    _, reg = build_manager()
    for cls in PROBES + [NodalMean]:
        reg.add("function", cls)
    return reg


def function(registry, case: str):
    problem, section = CASES[case]
    fn = build(registry, problem + f"objective: {section}\n").functions()[0]
    if isinstance(fn, StressPNorm):
        fn.closed_form = False  # the generated route, not the hand-written closed form
    return fn


def inputs(fn, seed: int):
    rng = np.random.default_rng(seed)
    mesh, n = fn.model.mesh, fn.cells.size
    nd = mesh.cells.shape[1] * fn.model.physics.dofs_per_node
    ue = rng.standard_normal((2, n, nd))
    rho = rng.uniform(0.2, 0.9, n)
    rho[0] = 0.0  # the relaxation's derivative convention at rho = 0
    return ue, rho, mesh.points[mesh.cells[fn.cells]]


# -- the source ----------------------------------------------------------------------

def test_stress_source_is_deterministic_with_the_expected_kernels(registry):
    a, b = function(registry, "stress-2d"), function(registry, "stress-2d")
    key_a, src_a = ic.generated(a)
    key_b, src_b = ic.generated(b)
    assert src_a == src_b and key_a == key_b  # two builds, one source
    assert ic.generated(a)[1] is src_a  # traced once per instance
    assert ic.kernel_names(a) == ("femopt_integrand_stress_pnorm_values<double>",
                                  "femopt_integrand_stress_pnorm_partials<double>")
    for name in ic.kernel_names(a):
        assert f"__global__ void {name.split('<')[0]}(" in src_a
    # p[] = the physics' parameters; q a literal of the trace; one centre point
    assert "p[3] = (E, nu, thickness)" in src_a and "femopt_fn_pow(t19, 0.5)" in src_a
    assert src_a.count("// point ") == 1 and "data[0]" in src_a
    for i in range(8):
        assert f"const S t{i} = u[{i}];" in src_a
    other = function(registry, "stress-3d")
    key_o, src_o = ic.generated(other)
    assert key_o != key_a and "femopt_fn_pow(t" in src_o and ", 0.7)" in src_o
    assert "u[23]" in src_o and "x[23]" in src_o


def test_quadrature_points_and_cell_data_in_the_source(registry):
    ratio = function(registry, "energy-ratio-quadrature")
    src = ic.generated(ratio)[1]
    assert src.count("// point ") == 4 and "out[6 + 1]" in src  # 4 points x 2 outputs
    mean = function(registry, "nodal-mean-data")
    src = ic.generated(mean)[1]
    assert ic.layout(mean)["NDATA"] == 4 and "data[3]" in src  # node_weight per node
    assert "p[2] = (conductivity, thickness)" in src


def test_module_is_compiled_once_per_key_and_device(registry, monkeypatch):
    compiled = []
    monkeypatch.setattr(kernels, "_GENERATED", {})
    monkeypatch.setattr(kernels, "_device_id", lambda: 0)
    monkeypatch.setattr(kernels, "_compile", lambda dev, code, names, options=():
                        compiled.append((dev, code, names)) or object())
    a, b = function(registry, "stress-2d"), function(registry, "stress-2d")
    mod = ic.module(a)
    assert ic.module(a) is mod and ic.module(b) is mod  # an equal source: one module
    assert len(compiled) == 1 and compiled[0][1] == kernels.PREAMBLE + ic.generated(a)[1]
    assert compiled[0][2] == ic.kernel_names(a)
    ic.module(function(registry, "stress-3d"))
    monkeypatch.setattr(kernels, "_device_id", lambda: 1)
    ic.module(a)
    assert [c[0] for c in compiled] == [0, 0, 1]


def test_an_integrand_that_does_not_trace_falls_back_to_arrays(registry, caplog):
    fn = function(registry, "cellwise-pnorm")
    fn.integrand = lambda ops, cell: float(cell.rho) * 1.0 + cell.u[0]  # float() of a trace
    with pytest.raises(TypeError):
        ic.generated(fn)

    class FakeCupy:  # any array module but NumPy asks for the kernels
        pass

    assert fn._kernels(FakeCupy) is False and not fn.generated_kernels
    assert "no generated kernel" in caplog.text


# -- the source run as host C++ ------------------------------------------------------

HOST = r"""
#include <math.h>
#include <cmath>
#define __device__
#define __global__
#define __forceinline__ inline
typedef long long femopt_index;
static inline femopt_index femopt_thread_id() { return 0; }
static inline femopt_index femopt_thread_count() { return 1; }
"""
WRAP = r"""
extern "C" void host_values(const double* ue, const double* rho, const double* coords,
    int shared, const double* p, const double* data, double* vals, long long nc, long long ne)
{ femopt_integrand_@N@_values<double>(ue, rho, coords, shared, p, data, vals, nc, ne); }
extern "C" void host_partials(const double* ue, const double* rho, const double* coords,
    int shared, const double* p, const double* data, const double* g, double* d_ue,
    double* d_rho, long long nc, long long ne)
{ femopt_integrand_@N@_partials<double>(ue, rho, coords, shared, p, data, g, d_ue, d_rho,
                                         nc, ne); }
"""


def host_library(fn, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "gen.cpp"
    src.write_text(HOST + ic.generated(fn)[1] + WRAP.replace("@N@", ic.c_name(fn)))
    lib = tmp_path / "gen.so"
    subprocess.run([cxx, "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                    str(src), "-o", str(lib)], check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def host_terms(fn, lib, ue, rho, coords):
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    f8 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    nc, ne, nd = ue.shape
    cols = ic.data_columns(fn)
    data = np.zeros((ne, max(len(cols), 1)))
    for j, (k, col) in enumerate(cols):
        v = np.asarray(fn.cell_data[k], dtype=float)
        data[:, j] = v if col is None else v[:, col]
    p = f8([float(v) for v in fn.params.values()] or [0.0])
    ue, rho, coords = f8(ue), f8(rho), f8(coords)
    common = (ptr(ue), ptr(rho), ptr(coords), ctypes.c_int(int(coords.shape[0] == 1)),
              ptr(p), ptr(data))
    vals = np.zeros((fn.reduction.n_out, nc, ne, fn.n_points))
    lib.host_values(*common, ptr(vals), ctypes.c_longlong(nc), ctypes.c_longlong(ne))
    value, g = fn._reduce(vals)
    g = f8(g)
    d_ue, d_rho = np.zeros((nc, ne, nd)), np.zeros((nc, ne))
    lib.host_partials(*common, ptr(g), ptr(d_ue), ptr(d_rho), ctypes.c_longlong(nc),
                      ctypes.c_longlong(ne))
    return value, d_ue, d_rho.sum(axis=0)


@pytest.mark.parametrize("case", list(CASES))
def test_generated_source_run_on_the_host_equals_the_numpy_route(registry, case, tmp_path):
    fn = function(registry, case)
    lib = host_library(fn, tmp_path)
    ue, rho, coords = inputs(fn, 31)
    want = fn.cell_terms(ue, rho, coords)
    got = host_terms(fn, lib, ue, rho, coords)
    assert got[0] == pytest.approx(want.value, rel=1e-12)
    for a, b in zip(got[1:], want[1:]):
        assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
    if fn.model.mesh.grid is not None and fn.points != "cell":  # one shared grid cell
        one = host_terms(fn, lib, ue, rho, coords[:1])
        assert np.abs(one[1] - want.d_ue).max() <= 1e-12 * np.abs(want.d_ue).max()


@pytest.mark.parametrize("case", list(CASES))
def test_generated_source_compiles_as_cuda(registry, case, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc")
    fn = function(registry, case)
    names = ic.kernel_names(fn)
    src = tmp_path / "gen.cu"
    src.write_text(kernels.PREAMBLE + ic.generated(fn)[1]
                   + "\nvoid* femopt_instances[] = {"
                   + ", ".join(f"(void*)&{n}" for n in names) + "};\n")
    run = subprocess.run([nvcc, "-std=c++17", "--ptx", "-arch=sm_90", str(src), "-o",
                          str(tmp_path / "gen.ptx")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    ptx = (tmp_path / "gen.ptx").read_text()
    for name in names:
        assert name.split("<")[0] in ptx


# -- on a GPU ---------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CASES))
def test_generated_kernels_on_the_gpu_equal_the_numpy_route(registry, case):
    import cupy

    fn = function(registry, case)
    ue, rho, coords = inputs(fn, 32)
    want = fn.cell_terms(ue, rho, coords)
    dev = [cupy.asarray(a) for a in (ue, rho, coords)]
    got = fn.cell_terms(*dev)
    assert fn._generated_source is not None  # the generated kernels ran
    assert isinstance(got.d_ue, cupy.ndarray) and isinstance(got.d_rho, cupy.ndarray)
    assert got.value == pytest.approx(want.value, rel=1e-12)
    assert fn.cell_value(*dev) == pytest.approx(want.value, rel=1e-12)
    for a, b in zip(got[1:], want[1:]):
        assert np.abs(a.get() - b).max() <= 1e-12 * np.abs(b).max()
    assert ic.module(fn) is ic.module(fn)
