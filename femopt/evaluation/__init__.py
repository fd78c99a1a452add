"""The one evaluation pipeline: design chain -> state solve -> functions -> adjoint ->
chain rule, behind one interface (:class:`~femopt.evaluation.path.EvaluationPath`) with
interchangeable backends: assembled on the CPU (:mod:`.assembled`), matrix-free multigrid
on grids (:mod:`.grid_device`, NumPy or CuPy) and assembled CSR on meshes
(:mod:`.mesh_device`, NumPy or CuPy). :class:`~femopt.evaluation.model.Model` builds a
problem and picks the backend (:mod:`.device_choice`)."""
