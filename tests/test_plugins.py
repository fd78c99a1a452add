"""Plugin discovery and plugin failures: every error names the plugin."""

from __future__ import annotations

import json
import types

import pytest

from conftest import SMALL_BEAM
from femopt.cli import main
from femopt.errors import PluginError
from femopt.objectives.compliance import Compliance
from femopt.plugins import manager
from femopt.plugins.manager import build_manager, hookimpl


def plugin_module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn) if hook.startswith("femopt_") else fn)
    return mod


def test_builtins_come_from_femopt_entry_points():
    _, registry = build_manager()
    infos = {i.name: i for i in manager.plugin_infos()}
    assert {"physics", "functions", "filters", "optimizers", "solvers", "meshes",
            "exporters"} <= set(infos)
    assert all(infos[n].distribution == "femopt" for n in ("physics", "functions"))
    assert registry.get("function", "compliance").plugin == "functions"
    assert registry.names("optimizer") == ["mma", "nlopt", "oc"]


def test_a_registrar_that_raises_is_named():
    def femopt_register_functions(registry):
        raise RuntimeError("boom")

    with pytest.raises(PluginError, match=r"plugin 'broken' raised in "
                                          r"femopt_register_functions: RuntimeError: boom"):
        build_manager({"broken": plugin_module("broken",
                                               femopt_register_functions=femopt_register_functions)})


def test_an_unknown_hook_is_named():
    def femopt_register_objectivez(registry):
        pass

    with pytest.raises(PluginError, match=r"plugin 'typo' implements an unknown hook"):
        build_manager({"typo": plugin_module("typo",
                                             femopt_register_objectivez=femopt_register_objectivez)})


def test_a_name_registered_twice_names_both_plugins():
    class Again(Compliance):
        name = "compliance"

    def femopt_register_functions(registry):
        registry.add("function", Again)

    with pytest.raises(PluginError, match=r"'compliance' is registered twice: by plugin "
                                          r"'functions' and by plugin 'dup'"):
        build_manager({"dup": plugin_module("dup", femopt_register_functions=femopt_register_functions)})


def test_an_entry_point_that_fails_to_import_is_named(tmp_path, monkeypatch):
    dist = tmp_path / "femopt_ghost-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: femopt-ghost\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[femopt]\nghost = femopt_ghost_missing_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"plugin 'ghost' \(entry point "
                                          r"'femopt_ghost_missing_module' of distribution "
                                          r"'femopt-ghost'\) failed to load: "
                                          r"ModuleNotFoundError"):
        build_manager()


@pytest.fixture
def with_plugin(monkeypatch):
    """Install an in-process plugin into the process-wide manager for one test."""

    def install(name: str, module: types.ModuleType) -> None:
        pm, registry = build_manager({name: module})
        monkeypatch.setattr(manager, "_manager", pm)
        monkeypatch.setattr(manager, "_registry", registry)

    yield install
    manager.reset()


class Exploding(Compliance):
    name = "exploding"

    def value(self, state):
        raise ZeroDivisionError("inside the plugin")


class WrongGradient(Compliance):
    name = "wrong_gradient"

    def adjoint_state(self, state):
        return 1.2 * super().adjoint_state(state)


def test_a_function_that_raises_during_a_run_is_named(with_plugin, write_problem, tmp_path,
                                                      capsys):
    def femopt_register_functions(registry):
        registry.add("function", Exploding)

    with_plugin("boomplug", plugin_module("boomplug",
                                          femopt_register_functions=femopt_register_functions))
    path = write_problem(SMALL_BEAM.replace("{type: compliance}", "{type: exploding}"))
    code = main(["run", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1  # the run had started: a run failure, with the plugin named
    assert "function 'exploding' from plugin 'boomplug' raised in value(): " \
           "ZeroDivisionError: inside the plugin" in err
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["status"] == "failed" and "ZeroDivisionError" in summary["message"]


def test_check_gradients_fails_for_a_wrong_gradient(with_plugin, write_problem, capsys):
    def femopt_register_functions(registry):
        registry.add("function", WrongGradient)

    with_plugin("wrongplug", plugin_module("wrongplug",
                                           femopt_register_functions=femopt_register_functions))
    path = write_problem(SMALL_BEAM.replace("{type: compliance}", "{type: wrong_gradient}"))
    code = main(["check-gradients", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    line = next(ln for ln in out.splitlines() if "wrong_gradient" in ln)
    assert "WRONG" in line
    rate = float(line.split("rates")[1].split()[0])
    assert 0.8 < rate < 1.2
