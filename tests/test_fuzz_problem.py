"""Fuzzing the loader and the validator: whatever the document, `femopt validate` either
accepts it or raises a FemoptError (never a traceback). Seeded and bounded: hypothesis
runs derandomized, so CI sees the same 2 x 200 documents every time; a longer search:
FEMOPT_FUZZ_EXAMPLES=5000 FEMOPT_FUZZ_RANDOM=1 pytest tests/test_fuzz_problem.py"""

from __future__ import annotations

import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SMALL_BEAM
from femopt.errors import FemoptError
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model

FUZZ = settings(max_examples=int(os.environ.get("FEMOPT_FUZZ_EXAMPLES", 200)),
                derandomize=not os.environ.get("FEMOPT_FUZZ_RANDOM"), deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck))

# characters that matter to YAML and to the loader's checks, and some that do not
ALPHABET = list("[]{}:,-&*!<>|'\"#%@`?=~.\n\t 0123456789abcxyz") + [
    "\x00", "\x07", "\x1b", "\x85", "\u2028", "\ufeff", "é", "<<", "!!int ", "*a", "&a "]


def validate(text: str, tmp_path) -> None:
    """What `femopt validate` does: load, validate, build the model."""
    registry = get_registry()
    try:
        loaded = parse_problem(text, str(tmp_path / "fuzz.yaml"), registry)
        Model(loaded, registry, device="cpu")
    except FemoptError:
        pass


edits = st.lists(st.tuples(st.integers(0, len(SMALL_BEAM)), st.integers(0, 3),
                           st.sampled_from(ALPHABET)), min_size=1, max_size=6)


@FUZZ
@given(edits=edits)
def test_edited_text_never_raises_anything_but_femopt_errors(edits, tmp_path):
    text = SMALL_BEAM
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    validate(text, tmp_path)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["x_min", "y", "density", "oc", "mma", "volume"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["type", "region", "point", "face", "max", "dofs",
                                     "force", "shape", "size", "radius", "max_iter", "[0]"]),
                    inner, max_size=4)), max_leaves=12)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


BASE = yaml.safe_load(SMALL_BEAM)
PATHS = [p for p in _paths(BASE) if p]


@FUZZ
@given(replacements=st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1,
                             max_size=3))
def test_replaced_values_never_raise_anything_but_femopt_errors(replacements, tmp_path):
    data = yaml.safe_load(SMALL_BEAM)
    for path, value in replacements:
        node = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    validate(yaml.safe_dump(data, allow_unicode=True), tmp_path)
