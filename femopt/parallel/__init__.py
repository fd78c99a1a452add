"""Distributed runs: one problem on several MPI ranks (mpi4py), slabs of a structured grid.

- :mod:`.comm`: the communicator (mpi4py's, or a serial stand-in for one rank), halo
  exchange and the reductions, deterministic whatever the number of ranks;
- :mod:`.comm_device`: the same interface for arrays on GPUs (``--device gpu``): NCCL,
  or host-staged MPI where ranks share a GPU (and for the NumPy twin);
- :mod:`.slabs`: which axis is cut (:class:`.orientation.Orientation`), each rank's slab
  of one grid level with its ghost layers (:class:`.slabs.Slab`), and the transfers between
  levels and slabs;
- :mod:`.multigrid`: the matrix-free multigrid preconditioned CG on the slabs, its
  levels' operators in :mod:`.operators`;
- :mod:`.stencil`, :mod:`.reductions`: the radius filters' stencil on a slab, the
  optimizers' sums over a cut design;
- :mod:`.path`: :class:`.path.DistributedGridPath`, the evaluation backend of a
  distributed run;
- :mod:`.launch`: ``femopt run --ranks N``, the rank-count check and how a failing rank
  stops the others;
- :mod:`.output`: ``design.xdmf`` and the series over per-rank HDF5 pieces (virtual
  datasets);
- :mod:`.checkpoints`: per-rank checkpoint pieces, their manifest, and resuming them on
  any number of ranks.
"""
