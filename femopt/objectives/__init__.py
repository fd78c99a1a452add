"""Objective and constraint functions, each a plugin."""

from femopt.objectives.base import Function, State

__all__ = ["Function", "State"]
