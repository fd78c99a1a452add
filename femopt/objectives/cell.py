"""What a function's integrand sees of one cell (or quadrature point) of one load case:
the same object whether its scalars are arrays, dual numbers or symbolic traces."""

from __future__ import annotations


class Cell:
    """What an integrand sees: one cell (or quadrature point) of one load case, each
    scalar an array over (cases, cells).

    Attributes:
        u: the cell's state, nd scalars, node-major (u[a * k + c]: component c of node a).
        rho: the cell's density. m: its material factor m(rho) (the design interpolation).
        x: node coordinates x[a][d].
        n, dn, w: at a point (``points`` = "centre" or "quadrature"): shape function values
            N_a, reference gradients dN_a/dxi_d and the quadrature weight (None for
            "cell"); :func:`femopt.assembly.element_kernel.isoparametric` gives dN/dx.
        p: parameters by name (the physics' E, nu, conductivity, ... and the function's).
        data: per-cell values the function set in ``cell_data``, by name: a scalar per
            cell, or for a (cells, k) array a list of k scalars (``node_weight``: the
            weights of a nodal mean, see ``region_selects``).
    """

    def __init__(self, u, rho, interp, x, n, dn, w, p, data):
        self.u, self.rho, self.x, self.n, self.dn, self.w = u, rho, x, n, dn, w
        self.p, self.data, self._interp = p, data, interp

    @property
    def m(self):
        return self._interp.value(self.rho)
