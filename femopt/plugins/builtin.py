"""femopt's built-in plugin modules, by plugin name.

The same list is declared as entry points in pyproject.toml; this copy is used only when
femopt runs from a source tree that was never installed.
"""

BUILTIN_PLUGINS = {
    "meshes": "femopt.mesh.plugin",
    "physics": "femopt.physics.plugin",
    "functions": "femopt.objectives.plugin",
    "filters": "femopt.filters.plugin",
    "optimizers": "femopt.optimizers.plugin",
    "solvers": "femopt.solvers.plugin",
    "exporters": "femopt.io.plugin",
}
