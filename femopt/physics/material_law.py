"""The material law femopt's paths assume: an element kernel affine in the material factor.

Every path assembles K(rho) = sum_e m(rho_e) K0_e + C_e and differentiates it as such (the
CPU adjoint and the grid path scale K0_e by m'(rho_e); the mesh path differentiates the
kernel in m by dual numbers). A kernel with, say, an m^2 term would make the forward
operators and the gradients disagree silently, so a problem with one is refused when it
is built.
"""

from __future__ import annotations

import numpy as np

from femopt.assembly.element_kernel import element_matrices
from femopt.errors import PluginError

AFFINE_RTOL = 1e-10  # of max |K_e|: round-off of an affine kernel is ~1e-16
N_CELLS = 3  # the first, a middle and the last cell


def affine_defect(kernel, coords: np.ndarray) -> tuple[float, int]:
    """max |K_e(1/2) - (K_e(0) + K_e(1))/2| / max |K_e| over cells ``coords`` and the
    cell (index into ``coords``) where it is largest."""
    k0, kh, k1 = (element_matrices(kernel, coords, m) for m in (0.0, 0.5, 1.0))
    scale = max(np.abs(k0).max(), np.abs(k1).max(), 1e-300)
    per_cell = np.abs(kh - 0.5 * (k0 + k1)).reshape(coords.shape[0], -1).max(axis=1)
    worst = int(np.argmax(per_cell))
    return float(per_cell[worst] / scale), worst


def require_affine_material_law(physics) -> None:
    """Raise :class:`PluginError` when ``physics`` declares an element kernel that is not
    affine in the material factor m (checked on a few cells at m = 0, 1/2, 1)."""
    kernel = physics.element_kernel()
    if kernel is None:
        return
    mesh = physics.mesh
    cells = np.unique(np.linspace(0, mesh.n_cells - 1, N_CELLS).astype(np.int64))
    defect, worst = affine_defect(kernel, mesh.cell_coords(cells))
    if defect > AFFINE_RTOL:
        raise PluginError(
            f"physics '{physics.name}': its element kernel is not affine in the material "
            f"factor m (on cell {int(cells[worst])}, K_e(0.5) differs from (K_e(0) + "
            f"K_e(1))/2 by {defect:.3g} of max |K_e|); femopt's paths assemble "
            "K = sum_e m_e K0_e + C_e, so they would solve and differentiate another "
            "operator: write the integrand as m times the design-scaled part plus a part "
            "without m")
