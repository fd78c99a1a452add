"""Meshes: the ``Mesh`` container, structured grid generators and region selectors."""

from femopt.mesh.mesh import Mesh, StructuredGrid
from femopt.mesh.structured import structured_grid

__all__ = ["Mesh", "StructuredGrid", "structured_grid"]
