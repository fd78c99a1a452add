"""Which backend a model runs on: ``auto|cpu|gpu`` (the command line's, else the
problem file's) resolved against what the GPU paths can run and the GPU's free memory."""

from __future__ import annotations

from functools import partial

from typing import Any

import numpy as np

from femopt.assembly.grid_layout import layout_of
from femopt.assembly.sparse_vector import to_design
from femopt.backend import gpu_memory, resolve_device
from femopt.errors import FemoptError, InputError


def choose_device(model: Any, requested: str | None, array_module: Any) -> Any:
    """Resolve ``auto|cpu|gpu`` (the command line's, else the file's) to the device
    this model runs on; the array module of the device path, or None for the CPU.
    A GPU request the path cannot serve is bad input located at ``device`` (or at
    ``--device``); ``auto`` falls back to the CPU and notes why."""
    grid = model.mesh.grid is not None

    model.device = "cpu"
    from_cli = requested is not None
    requested = requested if from_cli else model.problem.device

    def refuse(message: str) -> FemoptError:
        if from_cli:
            return InputError(f"--device {requested}: {message}")
        return model.loaded.error(("device",), message)

    if array_module is None:
        try:
            device, note = resolve_device(requested)
        except InputError as exc:
            raise refuse(str(exc)) from None
        if note:
            model.device_notes.append(f"device auto: {note}")
        if device == "cpu":
            return None
    # the device paths and their solvers are imported only for a device run
    from femopt.evaluation import grid_device, mesh_device

    paths = grid_device if grid else mesh_device
    # the solver a problem names must run on the path (what it declares); one that
    # names none gets the path's own
    path = "gpu grid" if grid else "gpu mesh"
    default_solver = "solver" not in model.loaded.located.data
    solver_ok = default_solver or path in getattr(type(model.solver), "device_paths", ())
    why = paths.unsupported(model, None if solver_ok else model.solver.name)
    if why is not None:
        if requested == "gpu" or array_module is not None:
            raise refuse(why)
        model.device_notes.append(f"device auto: {why}; running on the CPU")
        return None
    # a problem that names no solver gets the default where it runs on the path: on a mesh
    # the CPU's choice made as if without CHOLMOD (AMG on a 3D mesh from AMG_MIN_DOFS free
    # dofs: on the GPU 0.12 s per design iteration of the 1M-tet bracket, block-Jacobi
    # PCG 1.46 s; 0.15 and 0.33 s at 100k), else the path's own; before the memory it
    # needs is counted
    if default_solver and not grid:
        from femopt.solvers.choice import pick_solver

        pick = pick_solver(model.mesh, model.physics, model.n_free, model.has_springs,
                           cholmod=False)
        if path in getattr(type(pick.solver), "device_paths", ()):
            if type(pick.solver) is not type(model.solver):  # CHOLMOD made it direct
                pick.solver.bind(model.mesh, model.physics.dofs_per_node)
                pick.solver.set_near_null_space(model.physics.rigid_modes)
                model.solver, model.solver_choice = pick.solver, pick
            model.device_notes.append(f"solver: {pick.reason} on the GPU, the default")
        else:
            from femopt.solvers.pcg import PCGOptions, PCGSolver

            model.device_notes.append("solver: block-Jacobi PCG on the GPU instead of "
                                      f"{model.solver.name}, the CPU's default")
            model.solver = PCGSolver(PCGOptions(max_iter=mesh_device.MAX_ITER))
    elif default_solver and path not in getattr(type(model.solver), "device_paths", ()):
        from femopt.solvers.multigrid import MultigridOptions, MultigridSolver

        model.device_notes.append("solver: multigrid on the GPU instead of "
                                  f"{model.solver.name}, the CPU's default")
        model.solver = MultigridSolver(MultigridOptions())
        model.solver.bind(model.mesh, model.physics.dofs_per_node)
    if array_module is None:
        if grid:
            need = grid_device.estimate_bytes(
                layout_of(model.mesh, model.physics.dofs_per_node), len(model.case_names),
                model)
        else:
            need = mesh_device.estimate_bytes(model)
        if model.robust is not None:  # two more realizations' states and adjoints
            need += 2 * 2 * 8 * model.n_dofs * len(model.case_names)
        free, total = gpu_memory()
        if need > free:
            raise InputError(
                f"the problem needs about {need / 2**30:.2f} GiB of GPU memory "
                f"({model.mesh.n_cells} cells, estimated) but the GPU has "
                f"{free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB; use a coarser "
                "grid or --device cpu")
        import cupy

        xp = cupy
    else:
        xp = array_module
    if getattr(xp, "__name__", "") == "cupy":  # the allocator before the first array
        from femopt.backend import gpu_allocator

        gpu_allocator()
    model.device = "gpu"
    return xp


def shape_device(model: Any, requested: str | None) -> None:
    """Shape designs run on the CPU: a GPU request is refused, auto says so."""
    model.device = "cpu"
    asked = requested if requested is not None else model.problem.device
    if asked == "gpu":
        message = "a shape design runs on the CPU"
        if requested is not None:
            raise InputError(f"--device gpu: {message}")
        raise model.loaded.error(("device",), message)
    return None


def make_path(model: Any, xp: Any, distributed: Any) -> Any:
    """The backend of a built ``model``: the distributed grid path on ``distributed``'s
    ranks, the assembled CPU path (``xp`` None), or the GPU path of its mesh on ``xp``;
    the design bounds and start go where the backend keeps its design."""
    if distributed is not None:
        from femopt.parallel.path import DistributedGridPath

        path = DistributedGridPath(model, distributed, xp)
        put = partial(path.local_design_of, model.x_fixed_idx, model.x_fixed_val)
    elif xp is None:
        from femopt.evaluation.assembled import AssembledPath

        return AssembledPath(model)
    else:
        if model.mesh.grid is not None:
            from femopt.evaluation.grid_device import GridDevicePath as DevicePath
        else:
            from femopt.evaluation.mesh_device import MeshDevicePath as DevicePath
        path = DevicePath(model, xp)
        put = partial(to_design, xp)
    model.xmin, model.xmax, model.x0 = (put(a) for a in (model.xmin, model.xmax, model.x0))
    return path
