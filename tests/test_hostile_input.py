"""Problem files written by an attacker or by accident: every one is answered within
seconds with exit 2 and FILE:LINE:COL messages, and nothing is written."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from conftest import SMALL_BEAM
from femopt.cli import main
from femopt.problem import yamlload, yamlpos


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def located(err: str, path: Path) -> list[tuple[int, int, str, str]]:
    pat = re.compile(re.escape(str(path)) + r":(\d+):(\d+): ([^:]+): (.*)")
    return [(int(m[1]), int(m[2]), m[3], m[4]) for m in map(pat.match, err.splitlines()) if m]


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n" + SMALL_BEAM


def _merge_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: {j}" for j in range(width)) + "}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} [" + ", ".join([f"{{<<: *m{i - 1}}}"] * width) + "]")
    return "\n".join(lines) + "\n" + SMALL_BEAM


# name -> (problem text, line, key path (None: any), message part)
CORPUS = {
    "alias_bomb": (_alias_bomb(), 1, None, "alias bomb"),
    "merge_bomb": (_merge_bomb(), 1, None, "alias bomb"),
    "self_alias": ("a: &a [1, *a]\n" + SMALL_BEAM, 1, None, "contains it"),
    "undefined_alias": (SMALL_BEAM.replace("max: 0.5", "max: *half"), 16, None,
                        "no anchor &half"),
    "deep_flow": ("a: " + "[" * 5000 + "]" * 5000 + "\n" + SMALL_BEAM, 1, None, "nesting"),
    "deep_block": ("a:\n  " + "- " * 3000 + "x\n" + SMALL_BEAM, 2, None, "nesting deeper"),
    "deep_mapping": ("a: " + "{b: " * 2000 + "1" + "}" * 2000 + "\n" + SMALL_BEAM, 1, None,
                     "nesting"),
    "nul": (SMALL_BEAM.replace("small_beam", "small\x00beam"), 1, None, "U+0000"),
    "bell": (SMALL_BEAM.replace("x_min", "x_m\x07in"), 5, None, "U+0007"),
    "escaped_nul_name": (SMALL_BEAM.replace("name: small_beam", 'name: "a\\0b"'), 1, "name",
                         "control character"),
    "slash_name": (SMALL_BEAM.replace("name: small_beam", "name: ../.."), 1, "name",
                   "directory"),
    "absolute_name": (SMALL_BEAM.replace("name: small_beam", "name: /tmp/femopt-x"), 1,
                      "name", "path component"),
    "dot_name": (SMALL_BEAM.replace("name: small_beam", "name: '..'"), 1, "name",
                 "directory above"),
    "bracket_key": (SMALL_BEAM.replace("max_iter: 10", "'max[iter': 10"), 17,
                    "optimizer.max[iter", "unknown key"),
    "bracket_top_key": (SMALL_BEAM + "'a[0]': 1\n", 18, "a[0]", "unknown key"),
    "empty_dofs": (SMALL_BEAM.replace("dofs: [x]", "dofs: []"), 6, "supports.0.dofs",
                   "at least 1 item"),
    "unknown_tag": (SMALL_BEAM.replace("objective: {type", "objective: !shape {type"), 14,
                    "objective", "unsupported YAML tag '!shape'"),
    "python_tag": (SMALL_BEAM.replace("name: small_beam",
                                      "name: !!python/object/apply:os.system [ls]"), 1, "name",
                   "!!python/object/apply:os.system"),
    "binary_tag": (SMALL_BEAM.replace("name: small_beam", "name: !!binary aGk="), 1, "name",
                   "!!binary"),
    "bad_int_tag": (SMALL_BEAM.replace("max_iter: 10", "max_iter: !!int ten"), 17,
                    "optimizer.max_iter", "does not read as int"),
    "huge_int": (SMALL_BEAM.replace("max_iter: 10", "max_iter: " + "9" * 5000), 17,
                 "optimizer.max_iter", "does not read as int"),
    "bad_merge": (SMALL_BEAM.replace("optimizer: {type: oc,", "optimizer: {<<: 5, type: oc,"),
                  17, "optimizer", "merge key"),
    "merge_of_list": (SMALL_BEAM.replace("optimizer: {type: oc,",
                                         "optimizer: {<<: [[1]], type: oc,"), 17, "optimizer",
                      "merge key"),
    "two_documents": (SMALL_BEAM + "---\nname: b\n", 18, None, "single document"),
    "list_key": (SMALL_BEAM + "? [a, b]\n: 1\n", 18, None, "key must be"),
    "size_1e308": (SMALL_BEAM.replace("size: [12.0, 4.0]", "size: [1e308, 4.0]"), 2,
                   "mesh.size", "between"),
    "size_denormal": (SMALL_BEAM.replace("size: [12.0, 4.0]", "size: [5e-324, 4.0]"), 2,
                      "mesh.size", "between"),
    "size_nan": (SMALL_BEAM.replace("size: [12.0, 4.0]", "size: [.nan, 4.0]"), 2,
                 "mesh.size.0", "finite"),
    "bool_max_iter": (SMALL_BEAM.replace("max_iter: 10", "max_iter: true"), 17,
                      "optimizer.max_iter", "valid integer"),
    "string_max_iter": (SMALL_BEAM.replace("max_iter: 10", "max_iter: '300'"), 17,
                        "optimizer.max_iter", "valid integer"),
    "string_number_core": (SMALL_BEAM.replace("max: 0.5", "max: '0.5'"), 16,
                           "constraints.0.max", "finite number"),
    "bool_force": (SMALL_BEAM.replace("force: [0.0, -1.0]", "force: [0.0, true]"), 11,
                   "loads.0.force.1", "valid number"),
    "string_shape": (SMALL_BEAM.replace("shape: [12, 4]", "shape: ['12', 4]"), 2,
                     "mesh.shape.0", "valid integer"),
    "not_a_mapping": ("- 1\n- 2\n", 1, None, "mapping of sections"),
    "scalar_document": ("42\n", 1, None, "mapping of sections"),
    "empty_document": ("# nothing\n", 1, None, "mapping of sections"),
    "loads_and_cases": (SMALL_BEAM + "load_cases: [{loads: [{region: {face: x_max}, "
                        "force: [1.0, 0.0]}]}]\n", 1, None, "exactly one of 'loads'"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_hostile_problem_file_is_located_and_writes_nothing(case, command, tmp_path, capsys):
    text, line, key, message = CORPUS[case]
    path = tmp_path / "problem.yaml"
    path.write_text(text, encoding="utf-8")
    out_dir = tmp_path / "out"
    args = [command, path] + (["--out", out_dir] if command == "run" else [])
    t0 = time.perf_counter()
    code, out, err = run_cli(args, capsys)
    seconds = time.perf_counter() - t0
    assert code == 2, err
    errors = located(err, path)
    assert errors, err
    assert any(message in msg and key in (None, k) for _, _, k, msg in errors), err
    if line is not None:
        assert any(ln == line and message in msg for ln, _, _, msg in errors), err
    assert all(ln >= 1 and col >= 1 for ln, col, _, _ in errors)
    assert max(len(ln) for ln in err.splitlines()) < 500  # no problem dumped as a dict
    assert seconds < 10
    assert not out_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["problem.yaml"]


def test_invalid_utf8_is_located(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_bytes(SMALL_BEAM.encode().replace(b"x_min", b"x_\xffmin"))
    code, _, err = run_cli(["validate", path], capsys)
    assert code == 2
    assert located(err, path)[0][:2] == (5, 22), err


def test_document_size_is_bounded(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(yamlpos, "MAX_CHARS", 1000)
    monkeypatch.setattr("femopt.problem.load.MAX_CHARS", 1000)
    path = tmp_path / "p.yaml"
    path.write_text(SMALL_BEAM + "#" * 5000 + "\n", encoding="utf-8")
    code, _, err = run_cli(["validate", path], capsys)
    assert code == 2
    assert located(err, path)[0][:2] == (1, 1) and "up to 1000" in err, err


def test_alias_budget_counts_values_added_by_aliases():
    ok = "a: &a [1, 2, 3]\nb: [*a, *a]\n"
    located_, issues = yamlload.load_yaml(ok)
    assert issues == [] and located_.data == {"a": [1, 2, 3], "b": [[1, 2, 3], [1, 2, 3]]}
    # 9 levels of 9 aliases would be 9**8 = 43 million values: stopped at the budget
    t0 = time.perf_counter()
    located_, issues = yamlload.load_yaml(_alias_bomb())
    assert located_ is None and len(issues) == 1
    assert f"more than {yamlpos.MAX_ALIAS_VALUES} values" in issues[0].message
    assert time.perf_counter() - t0 < 2.0


def test_merge_keys_follow_yaml_rules():
    text = ("base: &b {x: 1, y: 2}\nother: &o {y: 5, z: 6}\n"
            "c: {<<: [*b, *o], x: 10}\n")
    located_, issues = yamlload.load_yaml(text)
    assert issues == []
    # own keys win over merged ones, and the first merged mapping over later ones
    assert located_.data["c"] == {"x": 10, "y": 2, "z": 6}
    assert located_.position(("c", "z"), key=True) == (2, 18)  # where z was written


NO_CONSTRAINT = SMALL_BEAM.replace("constraints:\n  - {type: volume, max: 0.5}\n", "")
RUN_CHECKS = {
    "oc_without_constraint": (NO_CONSTRAINT, "exactly one constraint"),
    "oc_with_stress": (SMALL_BEAM.replace("{type: volume, max: 0.5}",
                                          "{type: stress_pnorm, max: 2.0}"), "needs a solve"),
    "oc_minimizing_volume": (SMALL_BEAM.replace("objective: {type: compliance}",
                                                "objective: {type: volume}"),
                             "cannot minimize 'volume'"),
    "lbfgs_with_constraint": (SMALL_BEAM.replace("{type: oc, max_iter: 10}",
                                                 "{type: nlopt, algorithm: LD_LBFGS}"),
                              "handles bounds only"),
}


@pytest.mark.parametrize("case", sorted(RUN_CHECKS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_validate_refuses_what_run_refuses(case, command, tmp_path, capsys):
    text, message = RUN_CHECKS[case]
    path = tmp_path / "problem.yaml"
    path.write_text(text, encoding="utf-8")
    out_dir = tmp_path / "out"
    code, _, err = run_cli([command, path] + (["--out", out_dir] if command == "run" else []),
                           capsys)
    assert code == 2
    line = text.splitlines().index(next(ln for ln in text.splitlines()
                                        if ln.startswith("optimizer:"))) + 1
    assert [(ln, k) for ln, _, k, msg in located(err, path) if message in msg] == \
        [(line, "optimizer")], err
    assert not out_dir.exists()


@pytest.mark.parametrize("fmt, ext, binary", [("vtu", ".vtu", False), ("vtu", ".vtu", True),
                                              ("gmsh22", ".msh", False)])
def test_corrupted_mesh_files_raise_only_mesh_errors(fmt, ext, binary, tmp_path):
    """Seeded byte-level corruption of a good mesh file: every result is read or refused
    with a MeshError naming the file, never another exception."""
    import meshio
    import numpy as np

    from femopt.errors import MeshError
    from femopt.mesh.meshfile import read_mesh_file
    from test_mesh_files import box

    pts, tets = box("tet4", (2, 1, 1))
    base = tmp_path / f"base{ext}"
    meshio.write(base, meshio.Mesh(pts, [("tetra", tets)]), file_format=fmt,
                 **({} if fmt != "vtu" else {"binary": binary}))
    raw = base.read_bytes()
    rng = np.random.default_rng(11)
    refused = 0
    for i in range(60):
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(len(b)))
            op = rng.integers(3)
            if op == 0:
                b[pos] = int(rng.integers(256))
            elif op == 1:
                del b[pos:pos + int(rng.integers(1, 20))]
            else:
                b[pos:pos] = bytes(rng.choice(list(b"-0123456789 .e\n<>\"nanif"),
                                              int(rng.integers(1, 6))).tolist())
        path = tmp_path / f"m{i}{ext}"
        path.write_bytes(bytes(b))
        try:
            read_mesh_file(path)
        except MeshError as exc:
            assert str(exc).startswith(f"{path}: ")
            refused += 1
    assert refused >= 10  # the corruptions do break files
