"""The load vectors of a problem held by their nonzeros.

Loads act on faces, lines, points or the body of a region; a problem's (n_cases, n_dofs)
float64 vectors are, on a grid, almost all zeros. :class:`LoadNonzeros` keeps the loaded
dofs once (femopt's node-major numbering, sorted, distinct) and each case's values
there, so that a rank of a distributed run takes its slab's loads without a vector of
the whole grid (:mod:`femopt.parallel.path`), and the dense vectors are built only by a
path that uses them (``Model.loads``).
"""

from __future__ import annotations

import numpy as np

from femopt.assembly.sparse_vector import sum_pieces


class LoadNonzeros:
    """(n_cases, n_dofs) load vectors by their nonzeros.

    Args:
        index: the dofs where some case has a load (sorted, distinct).
        values: (n_cases, len(index)) the loads there.
        n_dofs: the length of a full vector.
    """

    def __init__(self, index: np.ndarray, values: np.ndarray, n_dofs: int):
        self.index = np.asarray(index, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float64)
        self.n_dofs = int(n_dofs)

    @classmethod
    def from_pieces(cls, n_cases: int, n_dofs: int,
                    pieces: list[tuple[int, np.ndarray, np.ndarray]]) -> LoadNonzeros:
        """Sum ``pieces`` (case, dofs, values; the dofs of one piece distinct) in their
        order: each dof's value is the same sum, in the same order, as adding the pieces
        to dense zero vectors one after another."""
        return cls(*sum_pieces(n_cases, pieces), n_dofs)

    def __len__(self) -> int:
        return self.values.shape[0]

    def dense(self) -> np.ndarray:
        """The full (n_cases, n_dofs) vectors."""
        out = np.zeros((len(self), self.n_dofs))
        out[:, self.index] = self.values
        return out

    def loaded(self) -> np.ndarray:
        """The dofs where some case's load is not zero."""
        return self.index[np.any(self.values != 0.0, axis=0)]
