"""The host arrays a :class:`~femopt.evaluation.model.Model` builds on first use only:
the paths that work on a grid (one GPU, or slabs on ranks) and the GPU mesh path never
ask for them, so a large problem does not hold them."""

from __future__ import annotations

from functools import cached_property

import numpy as np


class HostFields:
    """Mixed into Model: dense loads and springs, element matrices, cell dofs."""

    @cached_property
    def loads(self) -> np.ndarray:
        """(n_cases, n_dofs) host load vectors, built on first use: the paths that work
        on a grid (one GPU, or slabs on ranks) take :attr:`load_nonzeros` instead."""
        return self.load_nonzeros.dense()

    @property
    def has_springs(self) -> bool:
        return self.spring_nonzeros.any()

    @cached_property
    def springs(self) -> np.ndarray:
        """Spring stiffness per dof (a full dof vector), built on first use: the
        distributed path takes :attr:`spring_nonzeros` instead. Without springs a
        read-only view of zero (no array of the problem's size)."""
        if not self.has_springs:
            return np.broadcast_to(np.float64(0.0), (self.n_dofs,))
        return self.spring_nonzeros.dense()

    @cached_property
    def ke(self) -> np.ndarray:
        """Host element matrices of full material, (nd, nd) on a grid, else (n_cells, nd,
        nd); on first use only on the GPU mesh path, which makes its own on the device."""
        return self.physics.element_matrices()

    @cached_property
    def cell_dofs(self) -> np.ndarray:
        """(n_cells, nd) global dofs of each cell, built on first use (the GPU path, which
        works on the grid, never needs it)."""
        return self.physics.cell_dofs()
