"""The example physics package docs/examples/femopt-example-physics: two physics written as
integrands alone, checked against analytic solutions, and run on the CPU, the GPU grid path
and the GPU mesh path (NumPy twins here; CuPy under the gpu mark) with the same gradients.

Most tests register the package's module in-process; the command-line tests install the
package once (as a user would) and run ``femopt`` in a subprocess."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from femopt.adjoint.taylor import check_model_gradients
from femopt.backend import to_host
from femopt.errors import ProblemError
from femopt.mesh import structured_grid
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity, elasticity_matrix
from femopt.plugins.manager import build_manager
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model
from plugin_install import femopt, install

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "docs" / "examples" / "femopt-example-physics"
MESHES = ROOT / "problems" / "meshes"
PROBLEMS = {"reaction_diffusion": PACKAGE / "reaction_diffusion_square.yaml",
            "orthotropic_elasticity": PACKAGE / "orthotropic_cantilever.yaml"}


@pytest.fixture(scope="module")
def plugin():
    """The package's module, imported from its source folder."""
    sys.path.insert(0, str(PACKAGE))
    try:
        import femopt_example_physics
    finally:
        sys.path.remove(str(PACKAGE))
    return femopt_example_physics


@pytest.fixture(scope="module")
def registry(plugin):
    return build_manager(extra_plugins={"example_physics": plugin})[1]


def build(data: dict, registry, **kwargs) -> Model:
    return Model(parse_problem(yaml.safe_dump(data), "problem.yaml", registry), registry,
                 **kwargs)


def example(name: str, **changes) -> dict:
    data = yaml.safe_load(PROBLEMS[name].read_text())
    data.update(changes)
    return data


# -- reaction-diffusion: the slab solution ----------------------------------------------


def slab(n: int, registry) -> float:
    """Max nodal error of -k u'' + c u = f on [0, 1] (a strip of n x 1 cells), u(0) = 0,
    u'(1) = 0, against u = (f/c) (1 - cosh(a (1 - x)) / cosh(a)), a = sqrt(c/k)."""
    k, c, f = 2.0, 8.0, 3.0
    data = {"mesh": {"type": "structured", "shape": [n, 1], "size": [1.0, 0.1]},
            "physics": {"type": "reaction_diffusion", "k": k, "c": c},
            "supports": [{"region": {"face": "x_min"}}],
            "loads": [{"body": True, "heat": f}],
            "objective": {"type": "compliance"}}
    model = build(data, registry)
    u = model.path.analyse(np.ones(model.n)).u[0]
    x = model.mesh.points[:, 0]
    a = np.sqrt(c / k)
    exact = f / c * (1.0 - np.cosh(a * (1.0 - x)) / np.cosh(a))
    return float(np.abs(u - exact).max() / np.abs(exact).max())


def test_reaction_diffusion_slab_converges_at_second_order(registry):
    errors = [slab(n, registry) for n in (8, 16, 32)]
    rates = [np.log2(e0 / e1) for e0, e1 in zip(errors, errors[1:])]
    assert errors[-1] < 2e-3
    assert all(1.9 <= r <= 2.1 for r in rates), (errors, rates)


def test_reaction_diffusion_rigid_modes_follow_the_reaction(plugin):
    mesh = structured_grid((3, 2), (1.0, 1.0))
    opts = plugin.reaction_diffusion.ReactionDiffusionOptions
    assert plugin.ReactionDiffusion(opts(c=1.0), mesh).rigid_modes().shape == (12, 0)
    assert plugin.ReactionDiffusion(opts(c=0.0), mesh).rigid_mode_names() == [
        "a uniform u shift (no fixed u anywhere)"]


# -- orthotropic elasticity ---------------------------------------------------------------


def distorted(dim: int):
    mesh = structured_grid((3, 2, 2)[:dim], (1.5, 1.0, 1.0)[:dim])
    rng = np.random.default_rng(21)
    return mesh, mesh.points + rng.uniform(-0.06, 0.06, mesh.points.shape)


@pytest.mark.parametrize("dim", [2, 3])
def test_orthotropic_with_equal_constants_is_isotropic(plugin, dim):
    """Equal constants with G = E / (2 (1 + nu)) at any orientation: the isotropic D and
    element matrices, on distorted cells."""
    E, nu = 3.0, 0.28
    g = E / (2 * (1 + nu))
    orient = {"angle": 37.0} if dim == 2 else {"axes": [[1.0, 2.0, 0.5], [0.0, 1.0, 1.0]]}
    o = plugin.orthotropic.OrthotropicOptions(E1=E, E2=E, E3=E, nu12=nu, nu13=nu, nu23=nu,
                                              G12=g, G13=g, G23=g, thickness=0.4, **orient)
    mesh, pts = distorted(dim)
    ortho = plugin.OrthotropicElasticity(o, mesh)
    iso = LinearElasticity(ElasticityOptions(E=E, nu=nu, thickness=0.4), mesh)
    np.testing.assert_allclose(ortho.D, elasticity_matrix(E, nu, dim), atol=1e-14 * E)
    ref = iso.element_matrices_at(pts[mesh.cells])
    got = ortho.element_matrices_at(pts[mesh.cells])
    np.testing.assert_allclose(got, ref, atol=1e-13 * np.abs(ref).max())
    assert ortho.rigid_modes().shape[1] == (3 if dim == 2 else 6)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, -50.0])
def test_rotated_uniaxial_patch_test(registry, angle):
    """sigma_xx = s on a plate whose fibres run at ``angle``: the uniform strain of the
    rotated compliance (Lekhnitskii's closed forms), u_x = S11 s x, u_y = S12 s y + S16 s x
    with x_min held in x and the origin in y, exact at every node."""
    E1, E2, nu12, G12, s = 10.0, 1.0, 0.25, 0.5, 0.2
    L, H, nx, ny = 4.0, 2.0, 8, 4
    force = s * H / ny  # consistent nodal forces of the traction: half at the corners
    data = {"mesh": {"type": "structured", "shape": [nx, ny], "size": [L, H]},
            "physics": {"type": "orthotropic_elasticity", "E1": E1, "E2": E2, "nu12": nu12,
                        "G12": G12, "angle": angle},
            "supports": [{"region": {"face": "x_min"}, "dofs": ["x"]},
                         {"region": {"point": [0.0, 0.0]}, "dofs": ["y"]}],
            "loads": [{"region": {"box": {"min": [L, 0.1], "max": [L, H - 0.1]}},
                       "force": [force, 0.0]},
                      {"region": {"point": [L, 0.0]}, "force": [force / 2, 0.0]},
                      {"region": {"point": [L, H]}, "force": [force / 2, 0.0]}],
            "objective": {"type": "compliance"}}
    model = build(data, registry)
    u = model.path.analyse(np.ones(model.n)).u[0].reshape(-1, 2)
    c, sn = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    s11 = c**4 / E1 + (1 / G12 - 2 * nu12 / E1) * sn**2 * c**2 + sn**4 / E2
    s12 = (1 / E1 + 1 / E2 - 1 / G12) * sn**2 * c**2 - nu12 / E1 * (sn**4 + c**4)
    s16 = ((2 / E1 + 2 * nu12 / E1 - 1 / G12) * sn * c**3
           - (2 / E2 + 2 * nu12 / E1 - 1 / G12) * sn**3 * c)
    x, y = model.mesh.points.T
    np.testing.assert_allclose(u[:, 0], s11 * s * x, atol=1e-11 * s11 * s * L)
    np.testing.assert_allclose(u[:, 1], s12 * s * y + s16 * s * x, atol=1e-11 * s11 * s * L)


@pytest.mark.parametrize("bad, message", [
    ({"nu12": 4.0}, "the engineering constants give no stable material (the compliance "
                    "matrix is not positive definite)"),
    ({"angle": 10.0}, "angle orients a 2D material; in 3D give axes"),
    ({"axes": [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]}, "axes: axis 2 is parallel to axis 1"),
])
def test_bad_orthotropic_options_are_located(registry, bad, message):
    data = bracket("orthotropic_elasticity")
    data["physics"].update(bad)
    with pytest.raises(ProblemError) as exc:
        build(data, registry)
    (issue,) = exc.value.issues
    assert (issue.path, issue.message) == ("physics", message)


@pytest.mark.parametrize("cell", ["quad4", "tri3", "hex8", "tet4"])
@pytest.mark.parametrize("name", ["reaction_diffusion", "orthotropic_elasticity"])
def test_generated_cuda_trace_is_the_integrand(plugin, name, cell):
    """The trace the GPU kernels are printed from, interpreted with NumPy, gives the
    integrand's element matrices; the source names its three kernels."""
    from femopt.adjoint.codegen import kernel_names, kernel_source
    from femopt.adjoint.trace import evaluate_trace
    from femopt.assembly.element_kernel import element_matrices
    from femopt.mesh import Mesh

    dim = 3 if cell in ("hex8", "tet4") else 2
    grid, pts = distorted(dim)
    if cell in ("tri3", "tet4"):  # split the boxes into simplices
        split = ([[0, 1, 2], [0, 2, 3]] if dim == 2 else
                 [[0, 1, 3, 4], [1, 2, 3, 6], [1, 3, 4, 6], [3, 4, 6, 7], [1, 4, 5, 6]])
        cells = np.concatenate([grid.cells[:, s_] for s_ in split])
    else:
        cells = grid.cells
    mesh = Mesh(points=pts, cells=cells, cell_type=cell)
    if name == "reaction_diffusion":
        o = plugin.reaction_diffusion.ReactionDiffusionOptions(k=1.5, c=0.7)
        ph = plugin.ReactionDiffusion(o, mesh)
    else:
        orient = {"angle": 25.0} if dim == 2 else {"axes": [[1.0, 0.2, 0.3], [0.0, 1.0, 0.0]]}
        o = plugin.orthotropic.OrthotropicOptions(E1=5.0, E2=1.0, E3=2.0, G12=0.4, **orient)
        ph = plugin.OrthotropicElasticity(o, mesh)
    kern = ph.element_kernel()
    coords = pts[cells]
    m = np.linspace(0.2, 0.9, coords.shape[0])
    ref = element_matrices(kern, coords, m)
    np.testing.assert_allclose(evaluate_trace(kern, coords, m), ref,
                               atol=1e-13 * np.abs(ref).max())
    src = kernel_source(kern)
    assert all(n.split("<")[0] in src for n in kernel_names(kern))


# -- the three paths: same values and gradients ---------------------------------------------


def plate(name: str) -> dict:
    """The coarse plate with a hole (tri3, 339 cells), clamped on the left."""
    physics = {"reaction_diffusion": {"type": "reaction_diffusion", "k": 1.0, "c": 0.5},
               "orthotropic_elasticity": {"type": "orthotropic_elasticity", "E1": 10.0,
                                          "E2": 1.0, "nu12": 0.25, "G12": 0.5,
                                          "angle": 30.0}}[name]
    load = {"heat": 1.0} if name == "reaction_diffusion" else {"force": [0.2, -1.0]}
    return {"mesh": {"type": "file", "path": str(MESHES / "plate_with_hole_coarse.msh")},
            "physics": physics, "supports": [{"region": {"group": "left"}}],
            "loads": [{"body": True, **load}],
            "filters": [{"type": "density", "radius": 1.5}],
            "objective": {"type": "compliance"},
            "constraints": [{"type": "volume", "max": 0.5}],
            "optimizer": {"type": "mma", "max_iter": 5}}


def bracket(name: str) -> dict:
    """The 3D bracket (tet4, 3650 cells), bolts clamped, the lug loaded."""
    physics = {"reaction_diffusion": {"type": "reaction_diffusion", "k": 1.0, "c": 0.01},
               "orthotropic_elasticity": {
                   "type": "orthotropic_elasticity", "E1": 2.0e5, "E2": 5.0e4, "E3": 5.0e4,
                   "nu12": 0.3, "nu13": 0.3, "nu23": 0.35, "G12": 3.0e4, "G13": 3.0e4,
                   "G23": 2.0e4, "axes": [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]}}[name]
    load = {"heat": 1.0} if name == "reaction_diffusion" else {"force": [0.0, 0.0, -1000.0]}
    data = yaml.safe_load((ROOT / "problems" / "bracket_3d.yaml").read_text())
    data["mesh"]["path"] = str(MESHES / "bracket_3d.msh")
    data["physics"] = physics
    data["loads"] = [{"region": {"group": "lug"}, "distribute": "total", **load}]
    return data


def grid(name: str) -> dict:
    """The example problem on a coarser grid."""
    data = example(name)
    data["mesh"]["shape"] = [24, 12] if name == "orthotropic_elasticity" else [16, 16]
    data["mesh"]["size"] = [24.0, 12.0] if name == "orthotropic_elasticity" else [1.0, 1.0]
    if name == "orthotropic_elasticity":
        data["loads"][0]["region"] = {"point": [24.0, 6.0]}
        data["filters"] = [{"type": "density", "radius": 1.5}]
    else:
        data["filters"] = [{"type": "density", "radius": 0.1}]
        data["supports"][0]["region"]["box"] = {"min": [0.0, 0.4], "max": [0.0, 0.6]}
    return data


CASES = {"grid": (grid, "multigrid"), "plate": (plate, "pcg"), "bracket": (bracket, "pcg")}
NAMES = ["reaction_diffusion", "orthotropic_elasticity"]


def _cupy():
    import cupy

    return cupy


XP = [pytest.param("numpy", id="numpy"),
      pytest.param("cupy", id="cupy", marks=pytest.mark.gpu)]


def values_and_gradients(model: Model, seed: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.3, 0.7, model.n)
    x[model.passive_idx] = model.passive_val
    v, g = model.values_and_gradients(model.to_device(x))
    return v, [to_host(gi) for gi in g], x


@pytest.mark.parametrize("xp", XP)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", NAMES)
def test_gpu_paths_give_the_cpu_gradients(registry, name, case, xp):
    """Values and gradients of the GPU path (grid: multigrid, mesh: block-Jacobi PCG, both
    to rtol 1e-12) equal the CPU path's (direct solve) to 1e-8 relative; Taylor rates of
    the path's own gradients in [1.9, 2.1]."""
    xp = np if xp == "numpy" else _cupy()
    make, solver = CASES[case]
    cpu = build(make(name), registry, device="cpu")
    dev = build({**make(name), "solver": {"type": solver, "rtol": 1e-12}}, registry,
                array_module=xp)
    assert (cpu.device, dev.device) == ("cpu", "gpu")
    v_cpu, g_cpu, x = values_and_gradients(cpu)
    v_dev, g_dev, _ = values_and_gradients(dev)
    for a, b, ga, gb in zip(v_cpu, v_dev, g_cpu, g_dev):
        assert abs(b - a) <= 1e-10 * abs(a)
        assert np.abs(gb - ga).max() <= 1e-8 * np.abs(ga).max()
    d = np.random.default_rng(6).standard_normal(dev.n)
    d[dev.passive_idx] = 0.0
    (obj, *_) = check_model_gradients(dev, dev.to_device(x), dev.to_device(d))
    assert all(1.9 <= r <= 2.1 for r in obj.result.rates), obj.result.rates


@pytest.mark.parametrize("name", NAMES)
def test_check_gradients_on_the_gpu_mesh_path(registry, monkeypatch, tmp_path, capsys, name):
    """`femopt check-gradients --device gpu` on a mesh from a file with NumPy for CuPy:
    the plugin physics' generated sensitivity kernel (its twin) passes the Taylor test."""
    import femopt.backend
    import femopt.evaluation.device_choice
    from femopt.cli import main
    from femopt.plugins import manager

    monkeypatch.setattr(manager, "_manager", object())  # get_registry: this registry
    monkeypatch.setattr(manager, "_registry", registry)
    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(femopt.evaluation.device_choice, "gpu_memory", lambda: (2**33, 80 * 2**30))
    monkeypatch.setitem(sys.modules, "cupy", np)
    path = tmp_path / "plate.yaml"
    path.write_text(yaml.safe_dump(plate(name)))
    assert main(["check-gradients", str(path), "--device", "gpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "device: gpu (the GPU path)" in lines
    (obj,) = [ln for ln in lines if ln.startswith("objective compliance")]
    rates = [float(v) for v in obj.split("rates")[1].split()[:3]]
    assert all(1.9 <= r <= 2.1 for r in rates) and obj.endswith("ok"), obj


# -- the installed package on the command line -------------------------------------------


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    return install(PACKAGE, "femopt_example_physics", tmp_path_factory.mktemp("physics"))


def test_plugins_lists_the_physics_and_their_paths(plugin_env):
    proc = femopt(plugin_env, "plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    (header,) = [ln for ln in lines if ln.startswith("example_physics ")]
    assert "femopt-example-physics 0.1.0" in header
    at = lines.index(header)
    assert [ln.strip() for ln in lines[at + 1:at + 3]] == [
        "physics:orthotropic_elasticity  (runs on: cpu, gpu grid, gpu mesh)",
        "physics:reaction_diffusion  (runs on: cpu, gpu grid, gpu mesh)"]


@pytest.mark.parametrize("name", NAMES)
def test_check_gradients_and_run_on_the_cpu(plugin_env, tmp_path, name):
    path = tmp_path / "problem.yaml"
    path.write_text(yaml.safe_dump(grid(name)))
    proc = femopt(plugin_env, "check-gradients", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("objective compliance"))
    rates = [float(r) for r in re.findall(r"\d+\.\d+", line)]
    assert len(rates) == 3 and all(1.9 <= r <= 2.1 for r in rates), line
    out = tmp_path / "out"
    proc = femopt(plugin_env, "run", str(PROBLEMS[name]), "--out", str(out), "--max-iter", "4",
                  "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["iterations"] == 4 and summary["objective"] > 0
