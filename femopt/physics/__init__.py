"""Physics: each one a plugin that supplies element matrices for a unit material."""

from femopt.physics.base import Physics

__all__ = ["Physics"]
