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
from dataclasses import dataclass
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


_INT, _BOOL, _NULL, _TIMESTAMP = (_TAG + t for t in ("int", "bool", "null", "timestamp"))
_CONTROLLED = "!femopt/control-character"  # a double-quoted string whose escapes made one

# composed nodes are tuples (kind, tag or target, value, position): kind 0 scalar (value:
# its text), 1 list, 2 mapping (value: keys and values alternating), 3 alias (tag: the
# anchored node); position: line * _LINE + column, both 0-based
_SCALAR, _LIST, _MAPPING, _ALIAS = 0, 1, 2, 3
_LINE = 1 << 24
_CONSTRUCT = yaml.constructor.SafeConstructor()


def _pos(node: tuple) -> tuple[int, int]:
    return node[3] // _LINE + 1, node[3] % _LINE + 1


def _target(node: tuple) -> tuple:
    return node[1] if node[0] == _ALIAS else node


def _scalar(tag: str, text: str) -> tuple[Any, str | None]:
    """The value of a scalar node, or None and why it cannot be read."""
    if tag == _STR or tag == _TIMESTAMP:
        return text, None  # a date stays the text it was written as
    try:
        if tag == _FLOAT:
            try:
                return float(text), None
            except ValueError:  # .inf, .nan, 1:30.5
                return _CONSTRUCT.construct_yaml_float(yaml.ScalarNode(tag, text)), None
        if tag == _INT:
            if text.isdigit() and (text[0] != "0" or len(text) == 1):
                return int(text), None
            return _CONSTRUCT.construct_yaml_int(yaml.ScalarNode(tag, text)), None
        if tag == _BOOL:
            return _CONSTRUCT.bool_values[text.lower()], None
        if tag == _NULL:
            return None, None
    except Exception as exc:  # noqa: BLE001 - "!!int ten", an int of 5000 digits, ...
        detail = str(exc).split("\n")[0]
        detail = detail if len(detail) <= 100 else detail[:97] + "..."
        shown = text if len(text) <= 40 else text[:37] + "..."
        return None, f"{shown!r} does not read as {tag[len(_TAG):]} ({detail})"
    if tag == _CONTROLLED:
        bad = _CONTROL.search(text).group()
        return None, f"control character U+{ord(bad):04X} in a string"
    if tag == _MERGE:
        return None, "a merge key '<<' must be a mapping's key"
    return None, _bad_tag(tag)


def _bad_tag(tag: str) -> str:
    shown = "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag
    return (f"unsupported YAML tag {shown!r} (a problem file holds mappings, lists, "
            "strings, numbers, booleans and nulls)")


def _lookup(mapping: tuple, key: Any) -> tuple[tuple, tuple] | None:
    """(key node, value node) of ``key`` in a mapping node: its own keys first, then
    those of merged mappings in order."""
    items = mapping[2]
    merges = []
    for j in range(0, len(items), 2):
        kn = _target(items[j])
        if kn[0] != _SCALAR:
            continue
        if kn[1] == _MERGE:
            merges.append(_target(items[j + 1]))
            continue
        value, err = _scalar(kn[1], kn[2])
        if err is None and value == key and type(value) is type(key):
            return kn, items[j + 1]
    for m in merges:
        for inner in (m[2] if m[0] == _LIST else [m]):
            inner = _target(inner)
            if inner[0] == _MAPPING:
                hit = _lookup(inner, key)
                if hit is not None:
                    return hit
    return None


@dataclass
class Located:
    """Data read from a problem file and the composed document it came from, which
    gives the position of any key path on demand."""

    data: Any
    root: tuple | None = None

    def position(self, path: Path, key: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path`` (of its key with ``key``, where the last part is a key);
        of the nearest enclosing path that is in the file otherwise (its key where it
        has one)."""
        node = self.root
        if node is None:
            return None, None
        here = _pos(node)
        for i, part in enumerate(path):
            node = _target(node)
            nxt, kpos = None, None
            if node[0] == _LIST and type(part) is int and 0 <= part < len(node[2]):
                nxt = node[2][part]
            elif node[0] == _MAPPING:
                hit = _lookup(node, part)
                if hit is not None:
                    kpos, nxt = _pos(hit[0]), hit[1]
            if nxt is None:
                return here
            node = nxt
            if i == len(path) - 1:
                return kpos if key and kpos else _pos(nxt)
            here = kpos or _pos(nxt)
        return here

    def issue(self, path: Path, message: str, key: bool = False) -> Issue:
        line, col = self.position(path, key=key)
        return Issue(format_path(path), message, line, col)


def format_path(path: Path) -> str:
    return ".".join(str(p) for p in path)


def line_col(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character ``index`` of ``text``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


class _Stop(Exception):
    """Loading cannot go on (a limit was passed): one issue says why."""

    def __init__(self, issue: Issue):
        super().__init__(issue.message)
        self.issue = issue


def _mark_pos(mark: Any) -> int:
    return mark.line * _LINE + mark.column


def _compose(loader: Any) -> tuple | None:
    """The document's node tree from the parser's events: no recursion, nesting bounded,
    an alias only to a complete anchored value (no recursive structures)."""
    get_event = loader.get_event
    get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None
    get_event()  # document start
    anchors: dict[str, tuple] = {}
    open_anchors: set[str] = set()
    stack: list[tuple[tuple, str | None, list | None]] = []
    items: list | None = None  # keys/values of the innermost open list or mapping
    resolved: dict[str, str] = {}
    resolve = loader.resolve
    scalar_ev, alias_ev = yaml.ScalarEvent, yaml.AliasEvent
    seq_start, map_start = yaml.SequenceStartEvent, yaml.MappingStartEvent
    seq_end, map_end = yaml.SequenceEndEvent, yaml.MappingEndEvent
    while True:
        ev = get_event()
        kind = type(ev)
        if kind is scalar_ev:
            tag, text = ev.tag, ev.value
            if tag is None and ev.implicit[0]:
                tag = resolved.get(text)
                if tag is None:
                    tag = resolve(yaml.ScalarNode, text, (True, False))
                    if tag == _STR and _FLOAT_12.fullmatch(text):
                        tag = _FLOAT  # 1e-3 is a number (YAML 1.2), not the text "1e-3"
                    if len(resolved) < 100_000:
                        resolved[text] = tag
            elif tag is None or tag == "!":
                tag = _STR
            if ev.style == '"' and _CONTROL.search(text):
                tag = _CONTROLLED
            mark = ev.start_mark
            node = (_SCALAR, tag, text, mark.line * _LINE + mark.column)
            if ev.anchor is not None:
                anchors[ev.anchor] = node
        elif kind is seq_start or kind is map_start:
            if len(stack) >= MAX_DEPTH:
                raise _Stop(Issue("", f"nesting deeper than {MAX_DEPTH} levels",
                                  *_pos((0, 0, 0, _mark_pos(ev.start_mark)))))
            seq = kind is seq_start
            tag = ev.tag if ev.tag not in (None, "!") else (_SEQ if seq else _MAP)
            mark = ev.start_mark
            node = (_LIST if seq else _MAPPING, tag, [], mark.line * _LINE + mark.column)
            if ev.anchor is not None:
                open_anchors.add(ev.anchor)
            stack.append((node, ev.anchor, items))
            items = node[2]
            continue
        elif kind is seq_end or kind is map_end:
            node, anchor, items = stack.pop()
            if anchor is not None:
                open_anchors.discard(anchor)
                anchors[anchor] = node
        elif kind is alias_ev:
            where = _pos((0, 0, 0, _mark_pos(ev.start_mark)))
            if ev.anchor in open_anchors:
                raise _Stop(Issue("", f"alias *{ev.anchor} refers to a value that contains "
                                  "it (a recursive structure)", *where))
            if ev.anchor not in anchors:
                raise _Stop(Issue("", f"alias *{ev.anchor} refers to no anchor "
                                  f"&{ev.anchor} given before it", *where))
            node = (_ALIAS, anchors[ev.anchor], None, _mark_pos(ev.start_mark))
        else:
            raise _Stop(Issue("", f"malformed YAML: unexpected {kind.__name__}",
                              *_pos((0, 0, 0, _mark_pos(ev.start_mark)))))
        if items is None:
            break
        items.append(node)
    get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        ev = get_event()
        raise _Stop(Issue("", "malformed YAML: expected a single document in the stream, "
                          "found another one", *_pos((0, 0, 0, _mark_pos(ev.start_mark)))))
    return node


class _Builder:
    """Plain Python data from composed nodes; bounded alias use; issues with key paths."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        self.path: list[Any] = []
        self.aliased = 0  # values built through aliases and merge keys
        self.in_alias = 0

    def report(self, node: tuple, message: str, extra: tuple = ()) -> None:
        self.issues.append(Issue(format_path(tuple(self.path) + extra), message,
                                 *_pos(node)))

    def build(self, node: tuple, depth: int = 0) -> Any:
        kind = node[0]
        if kind == _ALIAS:
            self.in_alias += 1
            try:
                return self.build(node[1], depth)
            finally:
                self.in_alias -= 1
        if self.in_alias:
            self.aliased += 1
            if self.aliased > MAX_ALIAS_VALUES:
                self.report(node, f"aliases and merge keys add more than {MAX_ALIAS_VALUES} "
                            "values to the document (an alias bomb?)")
                raise _Stop(self.issues.pop())
        if kind == _SCALAR:
            value, err = _scalar(node[1], node[2])
            if err is not None:
                self.report(node, err)
            return value
        if depth >= MAX_DEPTH:
            self.report(node, f"aliases nest values deeper than {MAX_DEPTH} levels")
            raise _Stop(self.issues.pop())
        if kind == _LIST:
            if node[1] != _SEQ:
                self.report(node, _bad_tag(node[1]))
            out = []
            path = self.path
            path.append(0)
            for i, child in enumerate(node[2]):
                path[-1] = i
                if child[0] == _SCALAR and child[1] == _STR and not self.in_alias:
                    out.append(child[2])
                else:
                    out.append(self.build(child, depth + 1))
            path.pop()
            return out
        if node[1] != _MAP:
            self.report(node, _bad_tag(node[1]))
        return self.mapping(node, depth)

    def mapping(self, node: tuple, depth: int) -> dict[Any, Any]:
        own: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        items = node[2]
        path = self.path
        for j in range(0, len(items), 2):
            knode, vnode = items[j], items[j + 1]
            kn = _target(knode)
            if kn[0] != _SCALAR:
                self.report(kn, "a key must be a plain name or number, not a list or mapping")
                continue
            if kn[1] == _MERGE:
                self.merge(vnode, depth, merged)
                continue
            if self.in_alias or knode[0] == _ALIAS:
                self.aliased += 1
            key, err = _scalar(kn[1], kn[2])
            if err is not None:
                self.report(kn, err)
                continue
            if not isinstance(key, (str, int, float, bool)):
                self.report(kn, f"unsupported key {key!r}")
                continue
            if key in own:
                first = _lookup(node, key)
                self.report(kn, f"duplicate key (first given at line {_pos(first[0])[0]})",
                            (key,))
                continue
            path.append(key)
            vn = items[j + 1]
            if vn[0] == _SCALAR and vn[1] == _STR and not self.in_alias:
                own[key] = vn[2]
            else:
                own[key] = self.build(vn, depth + 1)
            path.pop()
        if not merged:
            return own
        merged.update(own)  # a mapping's own keys win over merged ones
        return merged

    def merge(self, vnode: tuple, depth: int, into: dict[Any, Any]) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: the keys of the mappings not already given
        (the first mapping of a list wins)."""
        target = _target(vnode)
        for item in (target[2] if target[0] == _LIST else [vnode]):
            inner = _target(item)
            if inner[0] != _MAPPING or inner[1] != _MAP:
                self.report(inner, "a merge key '<<' takes a mapping or a list of mappings")
                continue
            self.in_alias += 1  # merged values count against the alias budget
            try:
                value = self.mapping(inner, depth)
            finally:
                self.in_alias -= 1
            for k, v in value.items():
                into.setdefault(k, v)
