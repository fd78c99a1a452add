"""The exporter interface: a named format that writes a finished result."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from femopt.plugins.registry import Component


class Exporter(Component):
    """Writes a result (mesh, densities, states) in one file format. After a run on a
    device path the result's fields may be :class:`~femopt.backend.rows.RowSource`
    fields kept on the device: ``np.asarray(field)`` gives the whole array,
    ``field.slabs()`` its rows a slab at a time."""

    suffix: ClassVar[str] = ""

    def __init__(self, options: Any):
        self.options = options

    def export(self, result: Any, path: Path) -> None:
        raise NotImplementedError
