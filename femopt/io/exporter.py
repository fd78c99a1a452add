"""The exporter interface: a named format that writes a finished result."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from femopt.plugins.registry import Component


class Exporter(Component):
    """Writes a result (mesh, densities, states) in one file format. After a run on a
    device path the result's fields may be :class:`~femopt.backend.rows.RowSource`
    fields kept on the device: ``np.asarray(field)`` gives the whole array,
    ``field.slabs()`` its rows a slab at a time.

    What a format declares before a run (``femopt validate`` and ``femopt run`` ask):
    :meth:`refusal` (a mesh it cannot write) and :meth:`size_bound` (how large its file
    surely is)."""

    suffix: ClassVar[str] = ""

    def __init__(self, options: Any):
        self.options = options

    @classmethod
    def refusal(cls, mesh: Any) -> str | None:
        """Why this format cannot write a design on ``mesh``; None when it can. A
        problem whose ``output.formats`` lists such a format is refused before it runs."""
        return None

    @classmethod
    def size_bound(cls, mesh: Any, cell_values: int, point_values: int) -> int:
        """A lower bound of the bytes of the file of a design on ``mesh`` whose fields
        hold ``cell_values`` values per cell and ``point_values`` per node; 0 when the
        size is not known before the file is written."""
        return 0

    def export(self, result: Any, path: Path) -> None:
        raise NotImplementedError
