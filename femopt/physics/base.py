"""What every physics provides to assembly, solvers and the adjoint."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from femopt.assembly.elements import get_element
from femopt.mesh.mesh import Mesh
from femopt.physics import rigid_modes as rigid
from femopt.plugins.registry import Component

BODY_LOAD_CELLS = 1 << 15  # cells per batch of a body load's quadrature


# bytes of dK_e/dX that the dual-number shape sensitivity holds at once (hex8 elasticity:
# 110 KB per cell), so large meshes run in chunks of cells
DUAL_CHUNK_BYTES = 64 * 2**20
ELEMENT_CHUNK = 1 << 15  # cells per chunk of the element matrices of a mesh


class Physics(Component):
    """A linear physics whose stiffness scales element by element with a material factor.

    K(rho) = sum_e m(rho_e) * K0_e, where K0_e is the element matrix for the physics' full
    material (``element_matrices``) and m the design interpolation (SIMP/RAMP).

    A physics is written as its element integrand: subclasses set ``dof_names`` (per
    node), ``field_name`` (the point data written to results), ``load_name`` (the key of
    a nodal load in the problem file) and return an element kernel from
    :meth:`element_kernel`; the element matrices and the rigid modes follow from it.
    Without a kernel, a subclass implements :meth:`element_matrices_at` itself (and then
    runs on the CPU path alone).
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
        cells = self.mesh.cell_rows(0, self.mesh.n_cells)  # a grid's: built, not kept
        return (cells[:, :, None] * k + np.arange(k)).reshape(self.mesh.n_cells, -1)

    def element_matrices(self) -> np.ndarray:
        """Element matrices for full material: (nd, nd) when every cell is the same
        (structured grid), else (n_cells, nd, nd)."""
        if self.mesh.grid is not None:
            return self.element_matrices_at(self.mesh.cell_coords(np.arange(1)))[0]
        # in chunks of cells: the strain matrices and products of a whole 1M-cell mesh
        # would take several times the result's memory
        n, out = self.mesh.n_cells, None
        for c0 in range(0, n, ELEMENT_CHUNK):
            c1 = n if n - c0 < ELEMENT_CHUNK + 2 else c0 + ELEMENT_CHUNK  # no 1-cell chunk
            part = self.element_matrices_at(self.mesh.points[self.mesh.cells[c0:c1]])
            if out is None:
                out = np.empty((n,) + part.shape[1:], dtype=part.dtype)
            out[c0:c1] = part
            if c1 == n:
                break
        return out

    def element_matrices_at(self, coords: np.ndarray) -> np.ndarray:
        """(n_cells, nd, nd) element matrices of full material (m = 1) of cells with node
        coordinates ``coords``: by default the element kernel's. A physics with a fixed
        part C_e overrides this to return K0_e alone."""
        from femopt.assembly.element_kernel import element_matrices

        kernel = self.element_kernel()
        if kernel is None:
            raise NotImplementedError(f"physics '{self.name}' declares neither an element "
                                      "kernel nor element_matrices_at")
        return element_matrices(kernel, coords, 1.0)

    def mass_kernel(self):
        """The element kernel of the consistent mass matrix M_e(m) = m M0_e
        (:mod:`femopt.physics.mass`), or None for a physics without a mass (then no
        eigenfrequency can be computed)."""
        return None

    def element_mass_matrices(self) -> np.ndarray:
        """Mass matrices of full material, shaped like :meth:`element_matrices`."""
        from femopt.assembly.element_kernel import element_matrices

        kernel = self.mass_kernel()
        if kernel is None:
            raise ValueError(f"physics '{self.name}' has no mass")
        mesh = self.mesh
        cells = np.arange(1 if mesh.grid is not None else mesh.n_cells)
        out = element_matrices(kernel, mesh.cell_coords(cells), 1.0)
        return out[0] if self.mesh.grid is not None else out

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

    def coordinate_sensitivity(self, coords: np.ndarray, m: np.ndarray, u: np.ndarray,
                               lams: list[np.ndarray]) -> list[np.ndarray]:
        """Shape sensitivities sum_c lambda_c,e^T (dK_e(m_e)/dX_{a,d}) u_c,e per cell node.

        Args:
            coords: (n_cells, n_nodes, dim). m: (n_cells,) material factors.
            u: (n_cases, n_cells, nd) cell states. lams: adjoint cell states, one array
                like ``u`` per function.
        Returns:
            one (n_cells, n_nodes, dim) array per entry of ``lams``.

        This runs the element kernel on dual numbers seeded on the node coordinates
        (:func:`femopt.adjoint.dual.coordinate_derivative`, the NumPy twin of the
        generated ``shape_sensitivity`` kernel), dK_e/dX once for all ``lams``, in chunks
        of cells; a physics may override it with a closed form.
        """
        from femopt.adjoint.dual import coordinate_derivative

        kernel = self.element_kernel()
        if kernel is None:
            raise ValueError(f"physics '{self.name}' declares no element kernel: its "
                             "coordinate derivative dK/dX is not available")
        c, nn, dim = coords.shape
        chunk = max(1, DUAL_CHUNK_BYTES // (nn * dim * kernel.nd**2 * 8))
        out = [np.zeros((c, nn, dim)) for _ in lams]
        m = np.broadcast_to(np.asarray(m, dtype=float), (c,))
        for start in range(0, c, chunk):
            part = slice(start, start + chunk)
            dk = coordinate_derivative(kernel, coords[part], m[part])  # (e, s, nd, nd)
            dku = np.einsum("esij,cej->cesi", dk, u[:, part], optimize=True)
            for o, lam in zip(out, lams):
                g = np.einsum("cei,cesi->es", lam[:, part], dku, optimize=True)
                o[part] = g.reshape(-1, nn, dim)
        return out

    @classmethod
    def gpu_capability(cls) -> str | None:
        """Why this physics cannot run on the GPU paths (None when it can), from what it
        declares: an element kernel (the GPU kernels are generated from it), a symmetric
        operator (the GPU paths solve with CG) and no design-independent part (they
        assemble K = sum_e m_e K0_e alone)."""
        if cls.element_kernel is Physics.element_kernel:
            return ("it declares no element kernel (the GPU paths generate their kernels "
                    "from the element integrand)")
        if not cls.symmetric:
            return "its operator is not symmetric (the GPU paths solve with CG)"
        if cls.fixed_element_matrices is not Physics.fixed_element_matrices:
            return ("it has a design-independent part C_e (the GPU paths assemble "
                    "K = sum_e m_e K0_e alone)")
        return None

    @classmethod
    def paths(cls) -> list[str]:
        """The paths this physics runs on: ``cpu``, ``gpu grid``, ``gpu mesh``."""
        return ["cpu"] + ([] if cls.gpu_capability() else ["gpu grid", "gpu mesh"])

    def _null_mask(self) -> np.ndarray:
        """Which candidate modes (:mod:`femopt.physics.rigid_modes`) the first cell's
        element matrix annihilates."""
        if not hasattr(self, "_null"):
            from femopt.assembly.element_kernel import element_matrices

            cell = self.mesh.cell_coords(np.arange(1))[0]
            kernel = self.element_kernel()  # K0 + C where there is a kernel
            ke = (self.element_matrices_at(cell[None]) if kernel is None
                  else element_matrices(kernel, cell[None], 1.0))[0]
            self._null = rigid.null_candidates(ke, cell, self.dofs_per_node)
        return self._null

    def rigid_modes(self, dofs: np.ndarray | None = None) -> np.ndarray:
        """(n_dofs, m) basis of the null space of the unconstrained stiffness, or its rows
        at ``dofs`` (built for those alone: the support check of a large grid). By
        default the rigid-body motions (one component per axis) or uniform shifts that
        the element matrix does not resist: none for a definite operator."""
        mesh, k = self.mesh, self.dofs_per_node
        if dofs is None:
            modes = rigid.candidate_modes(mesh.points, k, center=mesh.node_center())
        else:  # the coordinates of those nodes alone
            dofs = np.asarray(dofs)
            nodes, local = np.unique(dofs // k, return_inverse=True)
            modes = rigid.candidate_modes(mesh.node_coords(nodes), k, local * k + dofs % k,
                                          center=mesh.node_center())
        return modes[:, self._null_mask()]

    def rigid_mode_names(self) -> list[str]:
        names = rigid.candidate_names(self.mesh.dim, self.dof_names, self.field_name)
        return [n for n, keep in zip(names, self._null_mask()) if keep]

    def body_load(self, value: list[float], cells: np.ndarray) -> np.ndarray:
        """Consistent nodal load of a uniform source ``value`` (per unit volume) on
        ``cells``; returns a full dof vector. The cells go by batches of
        :data:`BODY_LOAD_CELLS`, so the quadrature's arrays stay bounded; each dof's sum
        is the one all cells at once give, in the same order."""
        k = self.dofs_per_node
        vec = np.zeros(self.mesh.n_nodes * k)
        cells = np.asarray(cells)
        for a in range(0, cells.size, BODY_LOAD_CELLS):
            batch = cells[a:a + BODY_LOAD_CELLS]
            fe = self.source_terms(batch)
            nodes = self.mesh.cell_nodes(batch)
            for comp in range(k):
                np.add.at(vec, nodes * k + comp, fe * value[comp])
        return vec

    def source_terms(self, cells: np.ndarray) -> np.ndarray:
        """(cells, nodes) the integrals of each node's test function over ``cells`` (a
        unit source's load, before its components): sum_q N_i det J w t (det J w alone,
        no inverse Jacobians)."""
        from femopt.assembly.elements import quadrature_measures

        el = self.element
        wdet = quadrature_measures(el, self.mesh.cell_coords(cells))
        return np.einsum("cq,qn->cn", wdet, el.shape(el.quad_points)) * self.thickness()

    def thickness(self) -> float:
        """Out-of-plane thickness of a 2D model (the ``thickness`` option where a physics
        has one); 1 in 3D."""
        t = getattr(self.options, "thickness", None)
        return float(t) if t is not None and self.mesh.dim == 2 else 1.0
