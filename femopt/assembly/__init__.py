"""Elements, element kernels, sparse assembly with a fixed pattern, boundary conditions."""
