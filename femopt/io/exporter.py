"""The exporter interface: a named format that writes a finished result."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from femopt.plugins.registry import Component


class Exporter(Component):
    """Writes a result (mesh, densities, states) in one file format."""

    suffix: ClassVar[str] = ""

    def __init__(self, options: Any):
        self.options = options

    def export(self, result: Any, path: Path) -> None:
        raise NotImplementedError
