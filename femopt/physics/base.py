"""What every physics provides to assembly, solvers and the adjoint."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from femopt.assembly.elements import get_element
from femopt.mesh.mesh import Mesh
from femopt.plugins.registry import Component


class Physics(Component):
    """A linear physics whose stiffness scales element by element with a material factor.

    K(rho) = sum_e m(rho_e) * K0_e, where K0_e is the element matrix for the physics' full
    material (``element_matrices``) and m the design interpolation (SIMP/RAMP).

    Subclasses set ``dof_names`` (per node), ``field_name`` (the point data written to
    results), ``load_name`` (the key of a nodal load in the problem file) and implement
    :meth:`element_matrices_at` and :meth:`rigid_modes`.
    """

    dof_names: ClassVar[tuple[str, ...]] = ()
    field_name: ClassVar[str] = "u"
    load_name: ClassVar[str] = "value"
    dims: ClassVar[tuple[int, ...]] = (2, 3)
    symmetric: ClassVar[bool] = True
    """False for a physics whose operator is not symmetric (convection): the model then
    asks the solver for a non-symmetric solve, and adjoints solve with K^T."""

    def __init__(self, options, mesh: Mesh):
        self.options = options
        self.mesh = mesh
        if mesh.dim not in self.dims:
            raise ValueError(f"{self.name} supports {self.dims}D meshes, got {mesh.dim}D")
        self.element = get_element(mesh.cell_type)

    @property
    def dofs_per_node(self) -> int:
        return len(self.dof_names)

    def cell_dofs(self) -> np.ndarray:
        """(n_cells, nodes_per_cell * dofs_per_node) global dofs, node-major."""
        k = self.dofs_per_node
        return (self.mesh.cells[:, :, None] * k + np.arange(k)).reshape(self.mesh.n_cells, -1)

    def element_matrices(self) -> np.ndarray:
        """Element matrices for full material: (nd, nd) when every cell is the same
        (structured grid), else (n_cells, nd, nd)."""
        if self.mesh.grid is not None:
            return self.element_matrices_at(self.mesh.points[self.mesh.cells[:1]])[0]
        return self.element_matrices_at(self.mesh.points[self.mesh.cells])

    def element_matrices_at(self, coords: np.ndarray) -> np.ndarray:
        """(n_cells, nd, nd) element matrices of cells with node coordinates ``coords``."""
        raise NotImplementedError

    def fixed_element_matrices(self) -> np.ndarray | None:
        """The part of the element matrices that does not scale with the design (e.g.
        convection), (nd, nd) or (n_cells, nd, nd); None when there is none. The
        operator is then K(rho) = sum_e m(rho_e) K0_e + C_e."""
        return None

    def element_kernel(self):
        """The forward element kernel (:class:`femopt.assembly.element_kernel.
        ElementKernel`) with K_e(m) = m K0_e + C_e, from which the adjoint module
        generates transposed, design- and shape-sensitivity kernels; None if the physics
        does not declare one."""
        return None

    def rigid_modes(self, dofs: np.ndarray | None = None) -> np.ndarray:
        """(n_dofs, m) basis of the null space of the unconstrained stiffness, or its rows
        at ``dofs`` (built for those alone: the support check of a large grid)."""
        raise NotImplementedError

    def rigid_mode_names(self) -> list[str]:
        raise NotImplementedError

    def body_load(self, value: list[float], cells: np.ndarray) -> np.ndarray:
        """Consistent nodal load of a uniform source ``value`` (per unit volume) on
        ``cells``; returns a full dof vector."""
        el = self.element
        coords = self.mesh.points[self.mesh.cells[cells]]
        from femopt.assembly.elements import physical_gradients

        _, wdet = physical_gradients(el, coords)
        n = el.shape(el.quad_points)  # (q, n)
        fe = np.einsum("cq,qn->cn", wdet, n) * self.thickness()
        k = self.dofs_per_node
        vec = np.zeros(self.mesh.n_nodes * k)
        for comp in range(k):
            np.add.at(vec, self.mesh.cells[cells] * k + comp, fe * value[comp])
        return vec

    def thickness(self) -> float:
        """Out-of-plane thickness of a 2D model (the ``thickness`` option where a physics
        has one); 1 in 3D."""
        t = getattr(self.options, "thickness", None)
        return float(t) if t is not None and self.mesh.dim == 2 else 1.0
