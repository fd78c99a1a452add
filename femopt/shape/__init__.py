"""Shape optimization: the node coordinates of the mesh are the design."""

from femopt.shape.check import ShapeGradientCheck, check_shape_gradients, smooth_direction
from femopt.shape.geometry import Geometry
from femopt.shape.gradient import ShapeEvaluator

__all__ = ["Geometry", "ShapeEvaluator", "ShapeGradientCheck", "check_shape_gradients",
           "smooth_direction"]
