"""femopt: plugin-based finite-element topology and shape optimization.

The Python API (:mod:`femopt.api`): ``femopt.Problem``, ``femopt.run``, ``femopt.Result``.
Everything is imported on first use, so that ``import femopt`` (and ``femopt --help``)
stay light.
"""

__all__ = ["__version__", "Problem", "Result", "run"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("femopt")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0+source"


def __getattr__(name: str):
    if name == "__version__":
        v = _version()
        globals()["__version__"] = v
        return v
    if name in ("Problem", "Result", "run"):
        from femopt import api

        return getattr(api, name)
    raise AttributeError(f"module 'femopt' has no attribute {name!r}")
