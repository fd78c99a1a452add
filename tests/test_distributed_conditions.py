"""Springs and linear functions on a distributed run: each rank builds its slab's part
from their nonzeros (:class:`femopt.assembly.sparse_vector.SparseVector`), the run on two
ranks equals the one-rank run, and no rank holds a vector of the whole grid for them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from femopt.assembly.sparse_vector import SparseVector, add, scale
from femopt.evaluation.build import build_model
from femopt.parallel.comm import SERIAL
from femopt.parallel.launch import mpiexec
from test_distributed import femopt, needs_mpi, same_run

# springs at the input and output ports, a displacement objective (an adjoint solve per
# iteration) and a second displacement as a constraint beside the volume; cut along x
MECHANISM = """\
name: mechanism_mpi
mesh: {type: structured, shape: [24, 12], size: [24.0, 12.0]}
physics: {type: linear_elasticity}
supports:
  - region: {face: y_max}
    dofs: [y]
  - region: {box: {min: [0.0, 0.0], max: [0.0, 1.0]}}
springs:
  - region: {point: [0.0, 12.0]}
    dofs: [x]
    stiffness: 0.1
  - region: {point: [24.0, 12.0]}
    dofs: [x]
    stiffness: 0.1
loads:
  - region: {point: [0.0, 12.0]}
    force: [1.0, 0.0]
filters:
  - {type: density, radius: 1.5}
objective:
  type: compliant_mechanism
  region: {point: [24.0, 12.0]}
  direction: [1.0, 0.0]
constraints:
  - {type: volume, max: 0.3}
  - type: displacement
    region: {point: [0.0, 12.0]}
    direction: [1.0, 0.0]
    max: 40.0
optimizer: {type: mma, max_iter: 5}
solver: {type: multigrid, coarsest_size: 60}
output: {picture: false}
"""

# the mean temperature of every node (a functional of one value everywhere) in a weighted
# sum with the volume (a density weight vector scaled by the sum's weight)
HEAT = """\
name: heat_mean_mpi
mesh: {type: structured, shape: [16, 32], size: [1.0, 2.0]}
physics: {type: heat_conduction}
supports:
  - region: {box: {min: [0.4, 0.0], max: [0.6, 0.0]}}
loads:
  - body: true
    heat: 0.01
filters:
  - {type: sensitivity, radius: 0.1}
objective:
  type: weighted_sum
  terms:
    - {type: mean_temperature, weight: 1.0}
    - {type: volume, weight: 0.001}
constraints:
  - {type: volume, max: 0.4}
optimizer: {type: mma, max_iter: 5}
solver: {type: multigrid, coarsest_size: 40}
output: {picture: false}
"""


# -- the sparse vectors ---------------------------------------------------------------

def test_sparse_vector_pieces_and_arithmetic_equal_the_dense_ones():
    rng = np.random.default_rng(11)
    n = 50
    dense = np.zeros(n)
    pieces = []
    for _ in range(9):
        d = rng.choice(n, size=6, replace=False)
        v = rng.standard_normal(6)
        dense[d] += v
        pieces.append((d, v))
    a = SparseVector.from_pieces(n, pieces)
    np.testing.assert_array_equal(a.dense(), dense)  # the same sums, in order
    assert a.index.size == np.count_nonzero(dense)
    b = SparseVector(np.array([3, 7, 40]), np.array([0.5, -2.0, 1.25]), n, fill=0.125)
    const = np.broadcast_to(np.float64(0.3), (n,))
    for got, want in [(scale(a, 0.7), 0.7 * dense), (scale(b, -3.0), -3.0 * b.dense()),
                      (add(a, b), dense + b.dense()), (add(b, const), b.dense() + 0.3),
                      (add(const, const), np.full(n, 0.6)), (scale(const, 2.0),
                                                              np.full(n, 0.6))]:
        assert not isinstance(got, np.ndarray) or got.strides == (0,)  # never dense
        np.testing.assert_array_equal(np.asarray(getattr(got, "dense", lambda: got)()),
                                      want)
    np.testing.assert_array_equal(b.take(np.array([7, 0, 40, 7])), [-2.0, 0.125, 1.25,
                                                                     -2.0])
    assert b.nonzero().size == n and a.nonzero().size == np.count_nonzero(dense)


def test_one_rank_springs_and_functionals_equal_the_whole_vectors_cut(write_problem):
    """On one rank (the whole grid a slab; cut along x, a non-identity orientation) the
    springs and functionals placed from their nonzeros equal the whole vectors cut as
    before."""
    model = build_model(write_problem(MECHANISM), "cpu", distributed=SERIAL)
    path = model.path
    assert not path.orient.identity
    full = path.orient.nodes_in(path.model_layout.from_dofs(model.springs), 2)
    kept = path.slab.node_part(full) * ~path.kept_fixed
    idx = np.flatnonzero(kept)
    np.testing.assert_array_equal(path.springs[0], idx)
    np.testing.assert_array_equal(path.springs[1], kept[idx])
    fn = model.objective
    np.testing.assert_array_equal(path._functional_states(fn.functional),
                                  path._to_states(fn.a))
    assert np.count_nonzero(path._functional_states(fn.functional)) == 1
    v = model.bounds[0].function.linear_form().rho_weights
    np.testing.assert_array_equal(path._to_cells(v), path._to_cells(np.array(v)))


# -- on two ranks -----------------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("text", [MECHANISM, HEAT], ids=["springs_displacement",
                                                         "mean_temperature"])
def test_two_ranks_equal_one(text, write_problem, tmp_path):
    path = write_problem(text)
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"r{n}"
        proc = femopt("run", path, "--ranks", n, "--out", outs[n], "--quiet")
        assert proc.returncode == 0, proc.stderr
    same_run(outs[1], outs[2])
    assert json.loads((outs[2] / "summary.json").read_text())["iterations"] == 5


# each rank's arrays for the springs and the linear functions, in ARGV[2]/RANK.json
SIZES = """\
import json, sys
from femopt.evaluation.build import build_model
from femopt.parallel.comm import world
comm = world()
model = build_model(sys.argv[1], "cpu", distributed=comm)
path = model.path
forms = [form for parts in path.forms for _, form in parts]
json.dump({
    "bounds": path.slab.bounds, "axis": path.orient.axis,
    "kept_dofs": path.slab.local.n_dofs, "own_cells": path.slab.n_own_cells,
    "springs": [int(path.springs[0].size) if path.springs else 0],
    "functionals": [list(f.a.shape) for f in forms if f.a is not None],
    "functional_nonzeros": [int((f.a != 0).sum()) for f in forms if f.a is not None],
    "rho_weights": [int(f.rho_weights.size) for f in forms if f.rho_weights is not None],
    "whole": ["springs" in vars(model)] + ["a" in vars(f) for f in model.functions()],
}, open(f"{sys.argv[2]}/{comm.rank}.json", "w"))
"""


@needs_mpi
def test_a_rank_holds_its_slab_of_springs_and_functionals(write_problem, tmp_path):
    """MECHANISM on two ranks: the grid (24 x 12 cells, 25 x 13 nodes, 2 dofs) is cut
    along x into cells [0, 12) and [12, 24); rank 0 keeps node layers [0, 13), rank 1
    [11, 25) (its ghost layer below). Each keeps its springs (the input's on rank 0, the
    output's on rank 1), the functionals on its kept dofs and the density weights on its
    owned cells only; no vector of the whole grid is built."""
    path = write_problem(MECHANISM)
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-c", SIZES, str(path),
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for r, (got, layers) in enumerate(zip(ranks, (13, 14))):
        assert got["bounds"] == [0, 12, 24] and got["axis"] == 0
        assert got["kept_dofs"] == 2 * 13 * layers  # of 2 * 13 * 25 = 650
        assert got["own_cells"] == 12 * 12  # of 288
        assert got["springs"] == [1]
        # objective, then the displacement constraint (the volume has no functional)
        assert got["functionals"] == [[1, 2 * 13 * layers]] * 2
        assert got["functional_nonzeros"] == ([0, 1] if r == 0 else [1, 0])
        assert got["rho_weights"] == [144]
        assert got["whole"] == [False, False, False, False]
