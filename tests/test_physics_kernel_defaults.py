"""A physics written as its element integrand alone: element matrices and rigid modes
follow from the kernel, the GPU paths take it by capability (never by name), and a kernel
that is not affine in the material factor m is refused on every path."""

from __future__ import annotations

import types

import numpy as np
import pytest
import yaml

import femopt.backend
import femopt.evaluation.device_choice
from femopt.assembly.element_kernel import (ElementKernel, Ops, QuadPoint, element_matrices,
                                            isoparametric)
from femopt.cli import main
from femopt.errors import PluginError, ProblemError
from femopt.mesh import structured_grid
from femopt.physics.base import Physics
from femopt.physics.convection_diffusion import ConvectionDiffusion
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from femopt.physics.heat import HeatConduction, HeatOptions
from femopt.physics.material_law import affine_defect
from femopt.plugins import manager
from femopt.plugins.manager import hookimpl
from femopt.plugins.registry import Options
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model


class ScalarOptions(Options):
    reaction: float = 0.0
    """The reaction coefficient c of m (grad N . grad N + c N N)."""
    power: float = 1.0
    """m enters as m^power (1: affine)."""


def scalar_integrand(ops: Ops, pt: QuadPoint) -> list[list]:
    """m^p (grad N_i . grad N_j + c N_i N_j) det(J) w (m^p: affine for p = 1 only)."""
    dndx, wdet = isoparametric(ops, pt)
    nn, dim = len(dndx), len(dndx[0])
    s = wdet * (pt.m if pt.p["power"] == 1.0 else pt.m * pt.m)
    return [[s * (sum((dndx[i][d] * dndx[j][d] for d in range(dim)), 0.0)
                  + pt.p["c"] * pt.n[i] * pt.n[j]) for j in range(nn)] for i in range(nn)]


class IntegrandOnly(Physics):
    """A physics that writes nothing but its integrand and its names."""

    name = "integrand_only"
    summary = "test physics: an integrand and nothing else"
    Options = ScalarOptions
    dof_names = ("u",)
    field_name = "u"
    load_name = "heat"

    def element_kernel(self) -> ElementKernel:
        return ElementKernel(f"integrand_only_{self.element.name}", self.element, 1,
                             ("c", "power"), scalar_integrand,
                             {"c": self.options.reaction, "power": self.options.power})


class MatricesOnly(Physics):
    """A physics with hand-written element matrices and no kernel: CPU only."""

    name = "matrices_only"
    summary = "test physics: element matrices by hand"
    Options = HeatOptions
    dof_names = ("T",)
    field_name = "temperature"
    load_name = "heat"

    def element_matrices_at(self, coords):
        return HeatConduction(self.options, self.mesh).element_matrices_at(coords)


@hookimpl
def femopt_register_physics(registry) -> None:
    registry.add("physics", IntegrandOnly)
    registry.add("physics", MatricesOnly)


PLUGIN = types.SimpleNamespace(femopt_register_physics=femopt_register_physics)

PROBLEM = """
name: scalar
mesh: {type: structured, shape: [8, 4], size: [2.0, 1.0]}
physics: {type: integrand_only, reaction: 0.0}
supports: [{region: {face: x_min}}]
loads: [{body: true, heat: 1.0}]
objective: {type: compliance}
constraints: [{type: volume, max: 0.5}]
"""


@pytest.fixture
def registry(monkeypatch):
    """The process-wide registry with the test physics added (restored afterwards)."""
    monkeypatch.setattr(manager, "_infos", {})
    pm, reg = manager.build_manager(extra_plugins={"test_physics": PLUGIN})
    monkeypatch.setattr(manager, "_manager", pm)
    monkeypatch.setattr(manager, "_registry", reg)
    return reg


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(femopt.evaluation.device_choice, "gpu_memory", lambda: (2**33, 80 * 2**30))


def build(text: str, registry, **kwargs) -> Model:
    return Model(parse_problem(text, "problem.yaml", registry), registry, **kwargs)


def test_element_matrices_default_to_the_kernels():
    mesh = structured_grid((3, 2), (1.5, 1.0))
    ph = IntegrandOnly(ScalarOptions(reaction=2.0), mesh)
    coords = mesh.points[mesh.cells]
    np.testing.assert_array_equal(ph.element_matrices_at(coords),
                                  element_matrices(ph.element_kernel(), coords, 1.0))
    # a unit square cell: the Laplacian's diagonal 2/3 plus c times the mass's 1/9
    ke = IntegrandOnly(ScalarOptions(reaction=2.0),
                       structured_grid((1, 1), (1.0, 1.0))).element_matrices()
    assert ke[0, 0] == pytest.approx(2.0 / 3.0 + 2.0 / 9.0, rel=1e-14)


@pytest.mark.parametrize("dim", [2, 3])
def test_elasticity_closed_form_equals_its_kernel(dim):
    """The one closed form kept (a faster path for large meshes) equals the kernel's
    matrices on distorted cells."""
    mesh = structured_grid((3, 2, 2)[:dim], (1.0, 1.0, 1.0)[:dim])
    pts = mesh.points + np.random.default_rng(4).uniform(-0.05, 0.05, mesh.points.shape)
    ph = LinearElasticity(ElasticityOptions(E=2.0, nu=0.3, thickness=0.5), mesh)
    coords = pts[mesh.cells]
    ref = element_matrices(ph.element_kernel(), coords, 1.0)
    np.testing.assert_allclose(ph.element_matrices_at(coords), ref,
                               atol=1e-13 * np.abs(ref).max())


@pytest.mark.parametrize("make, n_modes, names", [
    (lambda m: LinearElasticity(ElasticityOptions(), m), 3,
     ["translation in x", "translation in y", "rotation about z"]),
    (lambda m: HeatConduction(HeatOptions(), m), 1,
     ["a uniform temperature shift (no fixed temperature anywhere)"]),
    (lambda m: IntegrandOnly(ScalarOptions(reaction=0.0), m), 1,
     ["a uniform u shift (no fixed u anywhere)"]),
    (lambda m: IntegrandOnly(ScalarOptions(reaction=0.5), m), 0, []),
], ids=["elasticity", "heat", "laplacian", "definite"])
def test_rigid_modes_are_what_the_element_matrix_does_not_resist(make, n_modes, names):
    mesh = structured_grid((4, 3), (2.0, 1.0))
    ph = make(mesh)
    modes = ph.rigid_modes()
    assert modes.shape == (mesh.n_nodes * ph.dofs_per_node, n_modes)
    assert ph.rigid_mode_names() == names
    if n_modes:
        k = ph.element_matrices()
        dofs = ph.cell_dofs()
        assert np.abs(np.einsum("ij,ejm->eim", k, modes[dofs])).max() < 1e-12
    np.testing.assert_array_equal(ph.rigid_modes(np.array([3, 5])), modes[[3, 5]])


def test_a_definite_scalar_physics_has_no_rigid_mode_to_check(registry):
    """The support check takes a physics without rigid modes (an (n, 0) basis)."""
    model = build(PROBLEM.replace("reaction: 0.0", "reaction: 1.0"), registry)
    # -u'' + u = 1, u(0) = 0, u'(2) = 0 at m = 1: u(2) = 1 - 1/cosh(2) (8 cells: O(h^2))
    u = model.path.analyse(np.ones(model.n)).u[0]
    end = np.isclose(model.mesh.points[:, 0], 2.0)
    np.testing.assert_allclose(u[end], 1.0 - 1.0 / np.cosh(2.0), rtol=3e-3)


def test_gpu_capability_is_declared_not_named():
    assert LinearElasticity.gpu_capability() is None
    assert HeatConduction.gpu_capability() is None
    assert IntegrandOnly.gpu_capability() is None
    assert IntegrandOnly.paths() == ["cpu", "gpu grid", "gpu mesh"]
    assert ConvectionDiffusion.gpu_capability() == ("its operator is not symmetric (the GPU "
                                                    "paths solve with CG)")
    assert MatricesOnly.gpu_capability().startswith("it declares no element kernel")
    assert MatricesOnly.paths() == ["cpu"]


def test_a_new_integrand_runs_on_the_gpu_grid_path(registry):
    model = build(PROBLEM + "device: gpu\n", registry, array_module=np)
    assert model.device == "gpu" and type(model.path).__name__ == "GridDevicePath"


@pytest.mark.parametrize("physics, reason", [
    ("matrices_only", "it declares no element kernel (the GPU paths generate their kernels "
                      "from the element integrand)"),
    ("convection_diffusion", "its operator is not symmetric (the GPU paths solve with CG)"),
])
def test_device_gpu_names_the_physics_and_the_reason(registry, fake_gpu, write_problem,
                                                     tmp_path, capsys, physics, reason):
    text = PROBLEM.replace("integrand_only, reaction: 0.0", physics)
    out = tmp_path / "res"
    code = main(["run", str(write_problem(text)), "--device", "gpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (f"error: --device gpu: the physics {physics!r} cannot run on "
                           f"the GPU: {reason}")
    assert not out.exists()


def test_plugins_shows_where_each_physics_runs(registry, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "physics:integrand_only  (runs on: cpu, gpu grid, gpu mesh)\n" in out
    assert "physics:linear_elasticity  (runs on: cpu, gpu grid, gpu mesh)\n" in out
    assert ("physics:matrices_only  (runs on: cpu; not on the GPU: it declares no element "
            "kernel (the GPU paths generate their kernels from the element integrand))\n"
            in out)
    assert ("physics:convection_diffusion  (runs on: cpu; not on the GPU: its operator is "
            "not symmetric (the GPU paths solve with CG))\n" in out)


# -- the material law: K_e(m) affine in m --------------------------------------------------


def test_affine_defect_of_an_m_squared_kernel():
    mesh = structured_grid((2, 2), (1.0, 1.0))
    coords = mesh.points[mesh.cells]
    affine = IntegrandOnly(ScalarOptions(power=1.0), mesh).element_kernel()
    square = IntegrandOnly(ScalarOptions(power=2.0), mesh).element_kernel()
    assert affine_defect(affine, coords)[0] < 1e-15
    # m^2 at 1/2 is 1/4 against the chord's 1/2: a defect of 1/4 of K_e(1)
    assert affine_defect(square, coords)[0] == pytest.approx(0.25, rel=1e-12)


@pytest.mark.parametrize("device", ["cpu", "device_twin"])
def test_a_kernel_not_affine_in_m_is_refused_on_every_path(registry, device):
    text = PROBLEM.replace("reaction: 0.0", "reaction: 0.0, power: 2.0")
    kwargs = {"device": "cpu"} if device == "cpu" else {"array_module": np}
    with pytest.raises(PluginError) as exc:
        build(text, registry, **kwargs)
    assert str(exc.value).startswith(
        "physics 'integrand_only': its element kernel is not affine in the material factor "
        "m (on cell 0, K_e(0.5) differs from (K_e(0) + K_e(1))/2 by 0.25 of max |K_e|); "
        "femopt's paths assemble K = sum_e m_e K0_e + C_e")
    build(PROBLEM, registry, **kwargs)  # the affine kernel is accepted


def test_the_command_line_refuses_it_with_exit_2(registry, write_problem, tmp_path, capsys):
    text = PROBLEM.replace("reaction: 0.0", "reaction: 0.0, power: 2.0")
    for args in (["run", "--out", str(tmp_path / "res")], ["check-gradients"]):
        code = main([args[0], str(write_problem(text)), *args[1:]])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("error: physics 'integrand_only': its element kernel is not "
                              "affine in the material factor m")
    assert not (tmp_path / "res").exists()


def test_the_affine_built_ins_are_accepted():
    for text in ("physics: {type: heat_conduction}", "physics: {type: linear_elasticity}"):
        data = yaml.safe_load(PROBLEM.replace(
            "physics: {type: integrand_only, reaction: 0.0}", text))
        if "elasticity" in text:
            data["loads"] = [{"body": True, "force": [0.0, -1.0]}]
        reg = manager.get_registry()
        build(yaml.safe_dump(data), reg)
    with pytest.raises(ProblemError):  # and a bad problem still reads as one
        build(PROBLEM.replace("reaction: 0.0", "reaction: oops"), manager.get_registry())
