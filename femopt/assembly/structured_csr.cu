// CSR assembly with a fixed pattern and a precomputed scatter map, and the CSR
// matrix-vector product of coarse multigrid levels.

// data[scatter[t]] += values[t] for every entry t of the cell matrices with a slot
// (scatter[t] < 0: the entry touches a constrained dof and is dropped).
template <typename T, typename I>
__global__ void femopt_assembly_csr_scatter(
    const T* __restrict__ values, const I* __restrict__ scatter, T* data, femopt_index n)
{
    for (femopt_index t = femopt_thread_id(); t < n; t += femopt_thread_count()) {
        const I slot = scatter[t];
        if (slot >= 0) atomicAdd(data + slot, values[t]);
    }
}

// The same with the entries of a uniform element matrix: values[t] = scale[cell[t]] *
// ke[local[t]] (the kept entries of FixedPatternAssembler).
template <typename T, typename I>
__global__ void femopt_assembly_csr_scatter_scaled(
    const T* __restrict__ scale, const T* __restrict__ ke, const I* __restrict__ cell,
    const int* __restrict__ local, const I* __restrict__ scatter, T* data, femopt_index n)
{
    for (femopt_index t = femopt_thread_id(); t < n; t += femopt_thread_count())
        atomicAdd(data + scatter[t], scale[cell[t]] * ke[local[t]]);
}

// y = alpha A u + beta z (z may alias y), 8 lanes per row.
template <typename T, typename I>
__global__ void femopt_assembly_csr_spmv(
    const I* __restrict__ indptr, const I* __restrict__ indices, const T* __restrict__ data,
    const T* __restrict__ u, const T* z, T* y, T alpha, T beta, femopt_index n_rows)
{
    const femopt_index tid = femopt_thread_id();
    const femopt_index row = tid >> 3;
    const int lane = (int)(tid & 7);
    T sum = T(0);
    if (row < n_rows) {
        const I end = indptr[row + 1];
        for (I k = indptr[row] + lane; k < end; k += 8) sum += data[k] * u[indices[k]];
    }
    // the 8 lanes of a row are consecutive in one warp
    for (int off = 4; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off, 8);
    if (row < n_rows && lane == 0)
        y[row] = beta != T(0) ? alpha * sum + beta * z[row] : alpha * sum;
}
