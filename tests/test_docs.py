"""The docs stay true to the code: the generated reference is current, every hook is in the
plugin guide, and every shipped problem file validates."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from femopt.cli import main
from femopt.plugins import hookspecs
from femopt.objectives import Function
from femopt.plugins.builtin import BUILTIN_PLUGINS
from femopt.plugins.manager import get_registry
from femopt.plugins.registry import Registry
from femopt.problem.reference import REGENERATE, render_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PROBLEMS = sorted((ROOT / "problems").glob("*.yaml"))


def test_problem_reference_is_current():
    committed = (DOCS / "problem-reference.md").read_text(encoding="utf-8")
    assert committed == render_reference(get_registry()), (
        f"docs/problem-reference.md is out of date; regenerate it with `{REGENERATE}`")


class _ThirdParty(Function):
    name = "third_party_function"
    summary = "Registered by a plugin outside femopt"


def test_reference_has_every_builtin_plugin_and_no_other():
    registry = Registry()
    for kind, by_name in get_registry().entries.items():
        registry.entries[kind].update(by_name)
    registry.current_plugin = "not_femopt"
    registry.add("function", _ThirdParty)
    text = render_reference(registry)
    entries = [e for by_name in registry.entries.values() for e in by_name.values()]
    assert len([e for e in entries if e.plugin in BUILTIN_PLUGINS]) >= 10
    for entry in entries:
        listed = f"#### `{entry.name}`" in text
        assert listed == (entry.plugin in BUILTIN_PLUGINS), (entry.plugin, entry.name)
    assert "third_party_function" not in text


def _hook_names() -> list[str]:
    tree = ast.parse(Path(hookspecs.__file__).read_text(encoding="utf-8"))
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef)
            and any(getattr(d, "id", None) == "hookspec" for d in node.decorator_list)]


def test_every_hook_is_in_the_plugin_guide():
    hooks = _hook_names()
    assert len(hooks) >= 10
    guide = (DOCS / "plugins.md").read_text(encoding="utf-8")
    missing = [h for h in hooks if h not in guide]
    assert not missing, f"docs/plugins.md does not mention: {', '.join(missing)}"


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.stem for p in PROBLEMS])
def test_shipped_problem_files_validate(problem, capsys):
    assert main(["validate", str(problem)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{problem}: ok (")
