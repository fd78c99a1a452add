"""femopt: plugin-based finite-element topology and shape optimization."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("femopt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0+source"

__all__ = ["__version__"]
