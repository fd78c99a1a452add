"""YAML loading that remembers where every key and value stands in the file.

PyYAML composes a node tree whose marks carry line and column; this module builds plain
Python data from it and two maps from key paths (tuples of keys and list indices) to
1-based (line, column): one for each key, one for each value. Duplicate keys, which
plain YAML loading silently merges, are reported as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from femopt.errors import Issue

Path = tuple[Any, ...]


@dataclass
class Located:
    data: Any
    value_pos: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_pos: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path, key: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path``; the nearest enclosing path that has one otherwise."""
        table = self.key_pos if key else self.value_pos
        p = tuple(path)
        while True:
            if p in table:
                return table[p]
            if key and p in self.value_pos:
                return self.value_pos[p]
            if not p:
                return None, None
            p = p[:-1]
            table = self.key_pos if p in self.key_pos else self.value_pos

    def issue(self, path: Path, message: str, key: bool = False) -> Issue:
        line, col = self.position(path, key=key)
        return Issue(format_path(path), message, line, col)


def format_path(path: Path) -> str:
    return ".".join(str(p) for p in path)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_yaml(text: str) -> tuple[Located | None, list[Issue]]:
    """Parse ``text``; returns the located data, or None and the syntax errors."""
    loader = yaml.SafeLoader(text)
    issues: list[Issue] = []
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = "malformed YAML: " + " ".join(filter(None, [exc.context, exc.problem]))
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return None, [Issue("", msg, line, col)]
    except yaml.YAMLError as exc:
        return None, [Issue("", f"malformed YAML: {exc}")]
    located = Located(None)

    def build(node: yaml.Node, path: Path) -> Any:
        located.value_pos[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                key = loader.construct_object(knode, deep=True)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    issues.append(Issue(format_path(path), f"unsupported key {key!r}",
                                        *_mark(knode)))
                    continue
                if key in out:
                    first = located.key_pos[path + (key,)]
                    issues.append(Issue(format_path(path + (key,)),
                                        f"duplicate key (first given at line {first[0]})",
                                        *_mark(knode)))
                    continue
                located.key_pos[path + (key,)] = _mark(knode)
                out[key] = build(vnode, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(v, path + (i,)) for i, v in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    try:
        located.data = build(root, ()) if root is not None else None
    except yaml.YAMLError as exc:
        return None, [Issue("", f"malformed YAML: {exc}")]
    finally:
        loader.dispose()
    return located, issues
