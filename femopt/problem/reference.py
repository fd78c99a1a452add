"""The problem-file reference (Markdown), generated from the schema and the plugins.

Every key, type, default and description comes from the code: the pydantic models of
:mod:`femopt.problem.schema`, the region selector :class:`~femopt.mesh.regions.Region`,
and each built-in plugin's ``Options`` (descriptions are the attribute docstrings). Only
femopt's own plugins go in, so the page is the same on every installation.

Regenerate the committed page with::

    python -m femopt.problem.reference > docs/problem-reference.md
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from femopt.mesh import regions
from femopt.mesh.regions import Region
from femopt.plugins.builtin import BUILTIN_PLUGINS
from femopt.plugins.registry import KINDS, Registry
from femopt.problem.load import PLUGIN_SECTIONS
from femopt.problem.schema import CONSTRAINT_KEYS, Problem

REGENERATE = "python -m femopt.problem.reference > docs/problem-reference.md"

KIND_TITLES = {
    "mesh": "Mesh sources",
    "physics": "Physics",
    "function": "Objective and constraint functions",
    "filter": "Filters",
    "optimizer": "Optimizers",
    "solver": "Linear solvers",
    "exporter": "Exporters",
}

_BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", ">="),
           (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "<="))


def render_reference(registry: Registry) -> str:
    """The problem-file reference as Markdown: core sections, regions, built-in plugins."""
    out = [
        "# Problem-file reference",
        "",
        "Generated from femopt's schema and built-in plugins by "
        f"`{REGENERATE}`: change the docstrings in the code, not this page. "
        "The [user guide](user-guide.md) explains the sections with examples.",
        "",
        "Every mapping rejects unknown keys, and numbers must be finite. A section whose "
        "`type:` picks a plugin (`mesh`, `physics`, `objective`, `constraints`, `filters`, "
        "`optimizer`, `solver`) takes the keys of that plugin's options, listed under "
        "[Plugins](#plugins).",
        "",
        "## Sections",
        "",
    ]
    for path, model in _core_models():
        out += _model_section(path, model)
    out += _region_section()
    out += ["## Plugins", ""]
    for kind in KINDS:
        out += _kind_section(registry, kind)
    while out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


# -- core sections ----------------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation)
               if typing.get_origin(annotation) in (typing.Union, types.UnionType))


def _core_models() -> list[tuple[str, type[BaseModel]]]:
    """(key path, model) of the problem file's nested mappings, each model once."""
    found: list[tuple[str, type[BaseModel]]] = []
    seen: set[type[BaseModel]] = {Region}

    def walk(model: type[BaseModel], path: str) -> None:
        found.append((path, model))
        seen.add(model)
        for key, field in model.model_fields.items():
            for sub in _models_in(field.annotation):
                if sub not in seen:
                    sub_path = (f"{path}." if path else "") + key
                    walk(sub, sub_path + ("[]" if _is_list(field.annotation) else ""))

    walk(Problem, "")
    return found


def _model_section(path: str, model: type[BaseModel]) -> list[str]:
    title = f"### `{path}`" if path else "### Top level"
    kind = model.model_fields.get("type")
    if kind is not None and typing.get_origin(kind.annotation) is typing.Literal \
            and len(typing.get_args(kind.annotation)) == 1:  # one branch of a tagged union
        title += f" (type: {typing.get_args(kind.annotation)[0]})"
    lines = [title, ""]
    doc = _doc(model)
    if doc:
        lines += [doc, ""]
    if path.endswith("[]"):
        lines += [f"`{path[:-2]}` is a list of mappings with these keys.", ""]
    return lines + _fields_table(model) + [""]


def _region_section() -> list[str]:
    module_doc = inspect.getdoc(regions) or ""
    body = module_doc.split("\n", 1)[1].strip() if "\n" in module_doc else ""
    lines = ["### Regions", "", _doc(Region), ""]
    if body:
        lines += [body.replace("``", "`"), ""]
    see = "see the list above"
    lines += _fields_table(Region, see) + [""]
    box = Region.model_fields["box"].annotation
    for sub in _models_in(box):
        corner = "the lower (`min`) or upper (`max`) corner"
        lines += ["#### `box`", ""] + _fields_table(sub, corner) + [""]
    return lines


# -- plugins ----------------------------------------------------------------------------


def _kind_section(registry: Registry, kind: str) -> list[str]:
    entries = [e for name, e in sorted(registry.entries[kind].items())
               if e.plugin in BUILTIN_PLUGINS]
    if not entries:
        return []
    lines = [f"### {KIND_TITLES.get(kind, kind)}", ""]
    keys = [f"`{section}{'[]' if is_list else ''}.type`"
            for section, (k, is_list) in PLUGIN_SECTIONS.items() if k == kind]
    if keys:
        lines.append(f"Picked by {' and '.join(keys)}.")
    else:
        lines.append("No section of a problem file picks these by `type:`.")
    if kind == "function":
        bounds = sorted(CONSTRAINT_KEYS - {"type"}, reverse=True)
        lines.append("As a constraint, an entry also takes exactly one of "
                     f"{' or '.join(f'`{k}`' for k in bounds)} (its bound). As the "
                     "objective, `maximize: true` maximizes it (default: minimized).")
    lines.append("")
    for entry in entries:
        cls = entry.cls
        lines += [f"#### `{entry.name}`", ""]
        summary = _clean(getattr(cls, "summary", "") or _doc(cls))
        if summary:
            lines += [summary + ("" if summary.endswith(".") else "."), ""]
        if cls.Options.model_fields:
            lines += _fields_table(cls.Options) + [""]
        else:
            lines += ["No options.", ""]
    return lines


# -- tables -----------------------------------------------------------------------------


def _fields_table(model: type[BaseModel], undocumented: str = "") -> list[str]:
    """A table of the model's keys; ``undocumented`` stands for a missing description."""
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    docs = attribute_docs(model)
    for key, field in model.model_fields.items():
        kind = _type_name(field.annotation)
        limits = _limits(field.metadata)
        if limits:
            kind += ", " + limits
        if _allows_none(field.annotation) and not _defaults_to_none(field):
            kind += " or null"
        doc = _clean(field.description or docs.get(key, "")) or undocumented
        rows.append(f"| `{key}` | {_cell(kind)} | {_cell(_default(field))} | {_cell(doc)} |")
    return rows


def attribute_docs(model: type) -> dict[str, str]:
    """The attribute docstrings of a model and its bases (the string under each annotated
    field of a class body), read from the source here: the models do not keep them, so
    that femopt's start-up does not parse the source of every option model."""
    docs: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if klass is BaseModel or not (isinstance(klass, type) and issubclass(klass, BaseModel)):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
            continue
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _allows_none(annotation: Any) -> bool:
    return (typing.get_origin(annotation) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(annotation))


def _defaults_to_none(field: Any) -> bool:
    return not field.is_required() and field.default_factory is None and field.default is None


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "region" if annotation is Region else "mapping"
        return {bool: "bool", int: "int", float: "float", str: "string"}.get(
            annotation, annotation.__name__)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = list(dict.fromkeys(_type_name(a) for a in args if a is not type(None)))
        return " or ".join(names)
    if origin is list:
        return f"list of {_plural(_type_name(args[0]))}" if args else "list"
    if origin is dict:
        return "mapping"
    if origin is typing.Annotated:
        return _type_name(args[0])
    return str(annotation).replace("typing.", "")


def _plural(name: str) -> str:
    if name.startswith("one of") or " or " in name:
        return f"({name})"
    return {"float": "numbers", "int": "integers", "string": "strings", "bool": "booleans",
            "mapping": "mappings", "region": "regions"}.get(name, name)


def _limits(metadata: list[Any]) -> str:
    parts = []
    for m in metadata:
        for cls, attr, sign in _BOUNDS:
            if isinstance(m, cls):
                parts.append(f"{sign} {_yaml(getattr(m, attr))}")
        if isinstance(m, annotated_types.MinLen) and m.min_length:
            parts.append(f"at least {m.min_length} item{'s' if m.min_length > 1 else ''}")
        if isinstance(m, annotated_types.MaxLen):
            parts.append(f"at most {m.max_length} items")
    return ", ".join(parts)


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if field.default_factory is not None:
        value = field.default_factory()
    if value is PydanticUndefined or value is None:
        return "not set"
    if isinstance(value, BaseModel):
        return "see its section"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """A value as it would be written in a problem file (flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value) if 1e-3 <= abs(value) < 1e6 or value == 0 else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _doc(obj: Any) -> str:
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return _clean(inspect.cleandoc(doc).split("\n\n")[0]) if doc else ""


def _clean(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    from femopt.plugins.manager import get_registry

    sys.stdout.write(render_reference(get_registry()))
