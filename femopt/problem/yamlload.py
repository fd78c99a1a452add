"""Loading a problem file's YAML within bounds: the document's size and control
characters checked first, then libyaml's events composed and built into located data
(:mod:`femopt.problem.yamlpos`), with the cyclic garbage collector held meanwhile."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

import yaml

from femopt.errors import Issue
from femopt.problem import yamlpos
from femopt.problem.yamlpos import (_CONTROL, _FIRST_CONTROLS, Located, _Builder, _compose,
                                    _Stop, line_col)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while millions of small acyclic objects (nodes,
    values) are made: its passes over them took most of the time of a 10 MB file."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_yaml(text: str) -> tuple[Located | None, list[Issue]]:
    """Parse ``text``; returns the located data, or None and the syntax errors."""
    with gc_paused():
        return _load_yaml(text)


def _load_yaml(text: str) -> tuple[Located | None, list[Issue]]:
    limit = yamlpos.MAX_CHARS
    if len(text) > limit:
        return None, [Issue("", f"the document has {len(text)} characters; femopt reads "
                            f"problem files of up to {limit}", 1, 1)]
    controls = [m.start() for _, m in zip(range(_FIRST_CONTROLS + 1), _CONTROL.finditer(text))]
    if controls:
        issues = [Issue("", f"control character U+{ord(text[i]):04X} is not allowed in a "
                        "problem file", *line_col(text, i)) for i in controls[:_FIRST_CONTROLS]]
        if len(controls) > _FIRST_CONTROLS:
            issues.append(Issue("", "more control characters follow", None, None))
        return None, issues
    issues: list[Issue] = []
    loader = None
    try:
        loader = yaml.CSafeLoader(text) if yaml.__with_libyaml__ else yaml.SafeLoader(text)
        root = _compose(loader)
        data = _Builder(issues).build(root) if root is not None else None
    except _Stop as exc:
        return None, [exc.issue]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = "malformed YAML: " + " ".join(filter(None, [exc.context, exc.problem]))
        where = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return None, [Issue("", msg, *where)]
    except yaml.reader.ReaderError as exc:
        return None, [Issue("", f"malformed YAML: {exc.reason}",
                            *line_col(text, min(exc.position, len(text))))]
    except yaml.YAMLError as exc:
        return None, [Issue("", f"malformed YAML: {exc}", 1, 1)]
    finally:
        if loader is not None:
            loader.dispose()
    return Located(data, root), issues
