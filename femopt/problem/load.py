"""Reading and validating a problem file, with every error located in the file.

Validation runs in two passes: the core schema (:mod:`femopt.problem.schema`), then each
plugin section against the ``Options`` of the plugin its ``type:`` names. Both passes
report errors the same way, ``FILE:LINE:COL: key.path: message``, with a suggestion for a
misspelt key or type. All errors are collected before anything is raised.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from femopt.errors import InputError, Issue, ProblemError
from femopt.plugins.registry import Registry
from femopt.problem.schema import CONSTRAINT_KEYS, DESIGN_TYPES, OBJECTIVE_KEYS, Problem
from femopt.problem.yamlload import gc_paused, load_yaml
from femopt.problem.yamlpos import MAX_CHARS, Located, Path, format_path

# problem-file section -> registry kind, and whether the section is a list
PLUGIN_SECTIONS = {
    "mesh": ("mesh", False),
    "physics": ("physics", False),
    "objective": ("function", False),
    "constraints": ("function", True),
    "filters": ("filter", True),
    "optimizer": ("optimizer", False),
    "solver": ("solver", False),
}


@dataclass
class Section:
    """A validated plugin section: its path, the plugin name and its options."""

    path: Path
    type: str
    options: BaseModel
    extra: dict[str, Any] = field(default_factory=dict)  # core keys (constraint bounds)


@dataclass
class LoadedProblem:
    filename: str
    problem: Problem
    located: Located
    sections: dict[str, Any]  # name -> Section, or list[Section] for list sections

    def issue(self, path: Path, message: str) -> Issue:
        return self.located.issue(path, message)

    def error(self, path: Path, message: str) -> ProblemError:
        return ProblemError(self.filename, [self.issue(path, message)])


def _model_of(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, list, Union)."""
    out: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_of(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            out += _model_of(arg)
    return out


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` from ``model``."""
    models = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            f = m.model_fields.get(part)
            if f is not None:
                nxt += _model_of(f.annotation)
        if not nxt:
            break
        models = nxt
    names: list[str] = []
    for m in models:
        names += list(m.model_fields)
    return names


def unknown_key_message(key: Any, known: list[str]) -> str:
    msg = f"unknown key {key!r}"
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    elif known:
        msg += f" (expected one of: {', '.join(known)})"
    return msg


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _data_path(loc: tuple[Any, ...], data: Any, keep_last: bool) -> Path:
    """The parts of a pydantic error location that name keys and indices of ``data``:
    the names pydantic inserts for union branches, validators and tags ('list[float]',
    'function-after[...]', 'density') are dropped, whatever characters the user's own
    keys hold. ``keep_last`` keeps the final part (a missing key is not in the data)."""
    out: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            out.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            out.append(part)
        elif keep_last and i == len(loc) - 1:
            out.append(part)
    return tuple(out)


def _shown(value: Any) -> str | None:
    """A short repr of an offending value; None for a mapping or list (the position
    shows it: a model-level error must not print the whole problem)."""
    if isinstance(value, (dict, list, tuple, set)):
        return None
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validation_issues(exc: ValidationError, model: type[BaseModel], located: Located,
                      prefix: Path) -> list[Issue]:
    """Map pydantic errors to located issues under ``prefix``."""
    issues = []
    base: Any = located.data
    for part in prefix:
        base = base[part] if isinstance(base, (dict, list)) else None
    for err in exc.errors():
        kind = err["type"]
        loc = _data_path(tuple(err["loc"]), base, keep_last=kind in ("missing",
                                                                     "extra_forbidden"))
        path = prefix + loc
        if kind == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            issues.append(located.issue(path + ("type",), unknown_key_message(
                tag, list(DESIGN_TYPES)).replace("unknown key", "unknown type")))
        elif kind == "extra_forbidden" and loc:
            msg = unknown_key_message(loc[-1], _fields_at(model, loc[:-1]))
            issues.append(located.issue(path, msg, key=True))
        elif kind == "missing":  # reported at the mapping that lacks the key
            line, col = located.position(path[:-1] if loc else path)
            issues.append(Issue(format_path(path), f"missing required key {loc[-1]!r}"
                                if loc else "missing value", line, col))
        else:
            msg = _clean(err["msg"])
            shown = _shown(err["input"]) if "input" in err else None
            if shown is not None and kind not in ("model_type", "dict_type"):
                msg += f" (got {shown})"
            issues.append(located.issue(path, msg))
    return issues


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen, out = set(), []
    for i in issues:
        k = (i.path, i.message)
        if k not in seen:
            seen.add(k)
            out.append(i)
    return out


def _validate_section(registry: Registry, kind: str, data: Any, path: Path,
                      located: Located, issues: list[Issue], core_keys: set[str]) -> Section | None:
    if not isinstance(data, dict):
        issues.append(located.issue(path, "expected a mapping with a 'type' key"))
        return None
    if "type" not in data:
        issues.append(located.issue(path, "missing required key 'type'"))
        return None
    name = data["type"]
    if not isinstance(name, str):
        issues.append(located.issue(path + ("type",), f"'type' must be a name, got {name!r}"))
        return None
    try:
        entry = registry.get(kind, name)
    except KeyError as exc:
        issues.append(located.issue(path + ("type",), exc.args[0]))
        return None
    opts = {k: v for k, v in data.items() if k not in core_keys}
    extra = {k: v for k, v in data.items() if k in core_keys and k != "type"}
    try:
        options = entry.cls.Options.model_validate(opts)
    except ValidationError as exc:
        sub = validation_issues(exc, entry.cls.Options, located, path)
        # an unknown key may be a core key of another section kind: the suggestion
        # list then also names the core keys
        issues.extend(sub)
        return None
    except Exception as exc:  # noqa: BLE001 - a plugin's validator raised something else
        issues.append(located.issue(path, f"{kind} '{name}' from plugin '{entry.plugin}' "
                                    f"raised while checking its options: "
                                    f"{type(exc).__name__}: {exc}"))
        return None
    # plugin sections inside this one (a weighted sum's terms): each validated against
    # its own plugin and handed to the component as a list of Sections
    nested = getattr(entry.cls.Options, "nested_sections", {})
    update = {}
    for key, (sub_kind, sub_core) in nested.items():
        items = getattr(options, key)
        subs = [_validate_section(registry, sub_kind, item, path + (key, i), located, issues,
                                  set(sub_core)) for i, item in enumerate(items)]
        update[key] = [s for s in subs if s is not None]
    if update:
        options = options.model_copy(update=update)
    return Section(path, name, options, extra)


def _constraint_bounds(sec: Section, located: Located, issues: list[Issue]) -> None:
    given = [k for k in ("max", "min", "equal") if sec.extra.get(k) is not None]
    if len(given) != 1:
        issues.append(located.issue(sec.path, "a constraint needs exactly one of 'max', "
                                    "'min' or 'equal'"))
        return
    key = given[0]
    v = sec.extra[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
        issues.append(located.issue(sec.path + (key,), f"expected a finite number, got {v!r}"))


def parse_problem(text: str, filename: str, registry: Registry) -> LoadedProblem:
    """Validate problem-file ``text``; raises ProblemError listing every error."""
    with gc_paused():
        return _parse_problem(text, filename, registry)


def _parse_problem(text: str, filename: str, registry: Registry) -> LoadedProblem:
    located, issues = load_yaml(text)
    if located is None:
        raise ProblemError(filename, issues)
    data = located.data
    if not isinstance(data, dict):
        issues.append(Issue("", "a problem file must be a mapping of sections", 1, 1))
        raise ProblemError(filename, issues)
    problem = None
    try:
        problem = Problem.model_validate(data)
    except ValidationError as exc:
        issues.extend(validation_issues(exc, Problem, located, ()))
    sections: dict[str, Any] = {}
    for name, (kind, is_list) in PLUGIN_SECTIONS.items():
        default = Problem.model_fields[name].default
        raw = data.get(name, default)
        if raw is None:
            continue
        core_keys = {"constraints": CONSTRAINT_KEYS,
                     "objective": OBJECTIVE_KEYS}.get(name, {"type"})
        if is_list:
            if not isinstance(raw, list):
                continue  # the core schema reported it
            secs = []
            for i, item in enumerate(raw):
                sec = _validate_section(registry, kind, item, (name, i), located, issues,
                                        core_keys)
                if sec is not None and name == "constraints":
                    _constraint_bounds(sec, located, issues)
                secs.append(sec)
            sections[name] = secs
        else:
            sections[name] = _validate_section(registry, kind, raw, (name,), located, issues,
                                               core_keys)
    out = data.get("output")
    if isinstance(out, dict) and isinstance(out.get("formats"), list):
        for i, fmt in enumerate(out["formats"]):
            if isinstance(fmt, str) and fmt not in registry.entries["exporter"]:
                issues.append(located.issue(("output", "formats", i),
                                            registry.unknown_message("exporter", fmt)))
    issues = _dedupe(issues)
    if issues or problem is None:
        raise ProblemError(filename, issues)
    return LoadedProblem(filename, problem, located, sections)


def read_problem(path: str | FsPath, registry: Registry) -> LoadedProblem:
    """Read and validate the problem file at ``path``; a file longer than
    :data:`~femopt.problem.yamlpos.MAX_CHARS` is refused before it is read."""
    p = FsPath(path)
    try:
        size = p.stat().st_size
        if size > 4 * MAX_CHARS:  # UTF-8 takes at most 4 bytes a character
            raise ProblemError(str(path), [Issue("", f"the file has {size} bytes; femopt "
                                                 f"reads problem files of up to {MAX_CHARS} "
                                                 "characters", 1, 1)])
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such problem file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the problem file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[:exc.start]
        line = head.count(b"\n") + 1
        col = len(head[head.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        raise ProblemError(str(path), [Issue("", f"not UTF-8 text (byte 0x{data[exc.start]:02x}"
                                             f" cannot start or continue a character)",
                                             line, col)]) from None
    return parse_problem(text, str(path), registry)
