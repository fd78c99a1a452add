"""Licences: femopt is MIT and ships its LICENSE; every package a default install pulls in
(the hard dependencies, recursively) has a licence a company can ship with closed-source
code. GPL, AGPL and non-commercial licences are refused; LGPL as a hard dependency too,
except where listed in ALLOWED with the reason."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from packaging.requirements import Requirement

# name: why its licence is acceptable although the check would refuse it
ALLOWED: dict[str, str] = {
    # nlopt's Python wheel is MIT; a few algorithms inside the compiled library are LGPL,
    # dynamically linked as a shared library, which LGPL permits in closed-source products
    "nlopt": "LGPL parts of a dynamically linked library",
}
REFUSED = re.compile(r"\b(A?GPL|LGPL|GNU (Affero |Lesser |Library )?General Public)|"
                     r"non[- ]?commercial|not for commercial", re.IGNORECASE)


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def licence_text(metadata) -> str:
    """What a distribution says of its licence: the SPDX expression, else its licence
    classifiers, else its License field (often the whole licence text)."""
    if metadata.get("License-Expression"):
        return metadata["License-Expression"]
    classifiers = [c for c in metadata.get_all("Classifier") or [] if c.startswith("License")]
    if classifiers:
        return "; ".join(classifiers)
    return metadata.get("License") or ""


def licence_problem(metadata) -> str | None:
    """Why a distribution's licence is refused, or None."""
    text = licence_text(metadata)
    if not text.strip():
        return "no licence in its metadata"
    m = REFUSED.search(text)
    return None if m is None else f"licence mentions {m.group(0)!r}"


def hard_dependencies(name: str) -> dict[str, object]:
    """Installed metadata of ``name`` and of everything it requires without an extra,
    recursively (environment markers evaluated for this interpreter)."""
    seen: dict[str, object] = {}
    todo = [name]
    while todo:
        n = todo.pop()
        if _key(n) in seen:
            continue
        try:
            dist = distribution(n)
        except PackageNotFoundError:
            pytest.fail(f"{n} is required but not installed")
        seen[_key(n)] = dist.metadata
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_femopt_is_mit_and_ships_its_licence():
    dist = distribution("femopt")
    assert dist.metadata["License-Expression"] == "MIT"
    assert dist.metadata.get_all("License-File") == ["LICENSE"]
    assert any(str(f).endswith("LICENSE") for f in dist.files or [])


def test_hard_dependencies_have_permissive_licences():
    deps = hard_dependencies("femopt")
    assert {"numpy", "scipy", "pyamg", "mapbox-earcut"} <= set(deps)
    assert "cvxopt" not in deps and "meshpy" not in deps  # optional extras, or gone
    refused = {n: p for n, md in deps.items()
               if n not in ALLOWED and (p := licence_problem(md)) is not None}
    assert not refused, refused


@pytest.mark.parametrize("fields, refused", [
    ({"License": "GNU GENERAL PUBLIC LICENSE Version 3"}, True),  # cvxopt's kind of text
    ({"Classifier": "License :: OSI Approved :: GNU Affero General Public License v3"}, True),
    ({"License-Expression": "LGPL-2.1-or-later"}, True),
    ({"License": "Triangle: free for private and research use, not for commercial use"}, True),
    ({"License": ""}, True),
    ({"License-Expression": "BSD-3-Clause"}, False),
    ({"Classifier": "License :: OSI Approved :: MIT License"}, False),
])
def test_the_licence_check_refuses_what_it_should(fields, refused):
    from email.message import Message

    md = Message()
    for k, v in fields.items():
        md[k] = v
    assert (licence_problem(md) is not None) == refused
