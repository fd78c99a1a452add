"""YAML loading that remembers where every key and value stands in the file.

libyaml (PyYAML's C parser) turns the text into events; this module composes them into a
node tree without recursion, builds plain Python data from it and two maps from key paths
(tuples of keys and list indices) to 1-based (line, column): one for each key, one for
each value. Duplicate keys, which plain YAML loading silently merges, are reported as
errors.

A problem file is data from anyone, so loading is bounded: the document's size
(:data:`MAX_CHARS`), its nesting (:data:`MAX_DEPTH`) and how many values aliases and
merge keys may add (:data:`MAX_ALIAS_VALUES`: an alias bomb stops there). Control
characters, unknown tags, recursive aliases, bad merges and scalars that do not read as
their type are each reported at their line and column; nothing here raises anything but
the issues it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from femopt.errors import Issue

Path = tuple[Any, ...]

MAX_CHARS = 20_000_000
"""Longest problem file (characters) femopt reads: a 10 MB file validates in seconds."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists (a problem file needs about 6)."""
MAX_ALIAS_VALUES = 100_000
"""Most values that aliases and merge keys (``*name``, ``<<:``) may add to a document."""

# what YAML 1.1 forbids in a stream, plus the C0/C1 controls an escape can still produce
# in a quoted string ("\0", "\x07"); tab, newline and carriage return are fine
_CONTROL = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_FIRST_CONTROLS = 10  # control characters reported one by one; then a count

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_MERGE = _TAG + "merge"
_MAP, _SEQ = _TAG + "map", _TAG + "seq"
_STR, _FLOAT = _TAG + "str", _TAG + "float"
# YAML 1.1 (PyYAML's resolver) needs a dot in a float; YAML 1.2 reads 1e-3 as a number
_FLOAT_12 = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


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


def line_col(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character ``index`` of ``text``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _mark(mark: Any) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


class _Stop(Exception):
    """Loading cannot go on (a limit was passed, the YAML is broken): one issue says why."""

    def __init__(self, issue: Issue):
        super().__init__(issue.message)
        self.issue = issue


class _Node:
    """A composed YAML value: kind 'scalar', 'seq' or 'map', its tag, its value (a string,
    a list of nodes, a list of (key, value) node pairs) and its position."""

    __slots__ = ("kind", "tag", "value", "pos")

    def __init__(self, kind: str, tag: str, value: Any, pos: tuple[int, int]):
        self.kind, self.tag, self.value, self.pos = kind, tag, value, pos


class _Alias:
    """A use of an anchored node (``*name``) at ``pos``."""

    __slots__ = ("node", "pos")

    def __init__(self, node: _Node, pos: tuple[int, int]):
        self.node, self.pos = node, pos


def _stop(path: Path, message: str, pos: tuple[int, int] | None) -> _Stop:
    line, col = pos if pos else (None, None)
    return _Stop(Issue(format_path(path), message, line, col))


def _compose(loader: Any) -> _Node | None:
    """The document's node tree from the parser's events, depth-bounded, iteratively."""
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None
    loader.get_event()  # document start
    anchors: dict[str, _Node] = {}
    open_anchors: set[str] = set()
    stack: list[tuple[_Node, str | None, list]] = []  # (node, anchor, [pending key])
    root: Any = None

    def attach(child: Any) -> None:
        nonlocal root
        if not stack:
            root = child
            return
        parent, _, pending = stack[-1]
        if parent.kind == "seq":
            parent.value.append(child)
        elif not pending:
            pending.append(child)
        else:
            parent.value.append((pending.pop(), child))

    while True:
        ev = loader.get_event()
        pos = _mark(ev.start_mark)
        if isinstance(ev, yaml.AliasEvent):
            if ev.anchor in open_anchors:
                raise _stop((), f"alias *{ev.anchor} refers to a value that contains it "
                             "(a recursive structure)", pos)
            if ev.anchor not in anchors:
                raise _stop((), f"alias *{ev.anchor} refers to no anchor &{ev.anchor} given "
                            "before it", pos)
            attach(_Alias(anchors[ev.anchor], pos))
        elif isinstance(ev, yaml.ScalarEvent):
            tag = ev.tag
            if tag is None or tag == "!":
                tag = loader.resolve(yaml.ScalarNode, ev.value, ev.implicit)
                if tag == _STR and ev.implicit[0] and _FLOAT_12.fullmatch(ev.value):
                    tag = _FLOAT  # 1e-3 is a number (YAML 1.2), not the text "1e-3"
            node = _Node("scalar", tag, ev.value, pos)
            if ev.anchor is not None:
                anchors[ev.anchor] = node
            attach(node)
        elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise _stop((), f"nesting deeper than {MAX_DEPTH} levels", pos)
            seq = isinstance(ev, yaml.SequenceStartEvent)
            tag = ev.tag if ev.tag not in (None, "!") else (_SEQ if seq else _MAP)
            node = _Node("seq" if seq else "map", tag, [], pos)
            if ev.anchor is not None:
                open_anchors.add(ev.anchor)
            stack.append((node, ev.anchor, []))
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            node, anchor, _ = stack.pop()
            if anchor is not None:
                open_anchors.discard(anchor)
                anchors[anchor] = node
            attach(node)
        if not stack and root is not None:
            break
    loader.get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        ev = loader.get_event()
        raise _stop((), "malformed YAML: expected a single document in the stream, found "
                    "another one", _mark(ev.start_mark))
    return root


class _Builder:
    """Plain Python data from composed nodes, with positions and bounded alias use."""

    def __init__(self, loader: Any, located: Located, issues: list[Issue]):
        self.loader = loader
        self.located = located
        self.issues = issues
        self.aliased = 0  # values built through aliases and merges
        self.in_alias = 0

    def build(self, node: Any, path: Path, depth: int = 0) -> Any:
        if isinstance(node, _Alias):
            self.in_alias += 1
            try:
                return self.build(node.node, path, depth)
            finally:
                self.in_alias -= 1
        if self.in_alias:
            self.aliased += 1
            if self.aliased > MAX_ALIAS_VALUES:
                raise _stop(path, f"aliases and merge keys add more than {MAX_ALIAS_VALUES} "
                            "values to the document (an alias bomb?)", node.pos)
        if depth > MAX_DEPTH:
            raise _stop(path, f"aliases nest values deeper than {MAX_DEPTH} levels", node.pos)
        self.located.value_pos[path] = node.pos
        if node.kind == "scalar":
            return self.scalar(node, path)
        if node.kind == "seq":
            if node.tag != _SEQ:
                self.bad_tag(node, path)
            return [self.build(v, path + (i,), depth + 1) for i, v in enumerate(node.value)]
        if node.tag != _MAP:
            self.bad_tag(node, path)
        return self.mapping(node, path, depth)

    def bad_tag(self, node: _Node, path: Path) -> None:
        tag = "!!" + node.tag[len(_TAG):] if node.tag.startswith(_TAG) else node.tag
        self.issues.append(Issue(format_path(path), f"unsupported YAML tag {tag!r} "
                                 "(a problem file holds mappings, lists, strings, numbers, "
                                 "booleans and nulls)", *node.pos))

    def scalar(self, node: _Node, path: Path) -> Any:
        tag = node.tag
        if tag == _MERGE:
            self.issues.append(Issue(format_path(path), "a merge key '<<' must be a mapping's "
                                     "key", *node.pos))
            return None
        if tag not in _SCALAR_TAGS:
            self.bad_tag(node, path)
            return None
        bad = _CONTROL.search(node.value)
        if bad:
            self.issues.append(Issue(format_path(path), "control character "
                                     f"U+{ord(bad.group()):04X} in a string", *node.pos))
            return None
        if tag in (_TAG + "str", _TAG + "timestamp"):
            return node.value  # a date stays the text it was written as
        try:
            sn = yaml.ScalarNode(tag, node.value)
            return {_TAG + "int": self.loader.construct_yaml_int,
                    _TAG + "float": self.loader.construct_yaml_float,
                    _TAG + "bool": self.loader.construct_yaml_bool,
                    _TAG + "null": self.loader.construct_yaml_null}[tag](sn)
        except Exception as exc:  # noqa: BLE001 - e.g. "!!int abc", an int of 5000 digits
            kind = tag[len(_TAG):]
            detail = str(exc).split("\n")[0][:120]
            self.issues.append(Issue(format_path(path), f"{node.value[:40]!r} does not read "
                                     f"as {kind} ({detail})", *node.pos))
            return None

    def mapping(self, node: _Node, path: Path, depth: int) -> dict[Any, Any]:
        own: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for knode, vnode in node.value:
            kn = knode.node if isinstance(knode, _Alias) else knode
            if kn.kind == "scalar" and kn.tag == _MERGE:
                self.merge(vnode, path, depth, merged)
                continue
            if kn.kind != "scalar":
                self.issues.append(Issue(format_path(path), "a key must be a plain name or "
                                         "number, not a list or mapping", *kn.pos))
                continue
            if self.in_alias or isinstance(knode, _Alias):
                self.aliased += 1
            key = self.scalar(kn, path)
            if not isinstance(key, (str, int, float, bool)):
                if not any(i.line == kn.pos[0] and i.col == kn.pos[1] for i in self.issues):
                    self.issues.append(Issue(format_path(path), f"unsupported key {key!r}",
                                             *kn.pos))
                continue
            if key in own:
                first = self.located.key_pos[path + (key,)]
                self.issues.append(Issue(format_path(path + (key,)),
                                         f"duplicate key (first given at line {first[0]})",
                                         *kn.pos))
                continue
            self.located.key_pos[path + (key,)] = kn.pos
            own[key] = self.build(vnode, path + (key,), depth + 1)
        if not merged:
            return own
        for k, v in own.items():  # a mapping's own keys win over merged ones
            merged.pop(k, None)
        merged.update(own)
        return merged

    def merge(self, vnode: Any, path: Path, depth: int, into: dict[Any, Any]) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: the keys of the mappings not already given
        (the first mapping of a list wins), positioned where they were written."""
        target = vnode.node if isinstance(vnode, _Alias) else vnode
        items = target.value if target.kind == "seq" else [vnode]
        for item in items:
            inner = item.node if isinstance(item, _Alias) else item
            if inner.kind != "map" or inner.tag != _MAP:
                self.issues.append(Issue(format_path(path), "a merge key '<<' takes a mapping "
                                         "or a list of mappings", *inner.pos))
                continue
            self.in_alias += 1  # merged values count against the alias budget
            try:
                value = self.mapping(inner, path, depth)
            finally:
                self.in_alias -= 1
            for k, v in value.items():
                into.setdefault(k, v)


def load_yaml(text: str) -> tuple[Located | None, list[Issue]]:
    """Parse ``text``; returns the located data, or None and the syntax errors."""
    if len(text) > MAX_CHARS:
        return None, [Issue("", f"the document has {len(text)} characters; femopt reads "
                            f"problem files of up to {MAX_CHARS}", 1, 1)]
    controls = [m.start() for _, m in zip(range(_FIRST_CONTROLS + 1), _CONTROL.finditer(text))]
    if controls:
        issues = [Issue("", f"control character U+{ord(text[i]):04X} is not allowed in a "
                        "problem file", *line_col(text, i)) for i in controls[:_FIRST_CONTROLS]]
        if len(controls) > _FIRST_CONTROLS:
            issues.append(Issue("", "more control characters follow", None, None))
        return None, issues
    issues: list[Issue] = []
    located = Located(None)
    loader = None
    try:
        loader = yaml.CSafeLoader(text) if yaml.__with_libyaml__ else yaml.SafeLoader(text)
        root = _compose(loader)
        if root is not None:
            located.data = _Builder(loader, located, issues).build(root, ())
    except _Stop as exc:
        return None, [exc.issue]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = "malformed YAML: " + " ".join(filter(None, [exc.context, exc.problem]))
        return None, [Issue("", msg, *(_mark(mark) if mark else (None, None)))]
    except yaml.reader.ReaderError as exc:
        return None, [Issue("", f"malformed YAML: {exc.reason}",
                            *line_col(text, min(exc.position, len(text))))]
    except yaml.YAMLError as exc:
        return None, [Issue("", f"malformed YAML: {exc}", 1, 1)]
    finally:
        if loader is not None:
            loader.dispose()
    return located, issues
