// Assembly of K = sum_e scale_e K_e into a fixed CSR pattern, per-cell element matrices.
//
// The entries (cell, i, j) of the element matrices that land on two free dofs are sorted
// once by their CSR slot (stably, so within a slot in the order of FixedPatternAssembler's
// kept entries); slot s owns the sorted entries ptr[s] .. ptr[s+1]-1. One thread per CSR
// value sums its own entries: no atomics, no zeroing of data, and every value is summed in
// the same order as the CPU's bincount, so float64 results equal it bit for bit.

// Round-to-nearest products: nvcc must not contract acc + scale * value into an FMA,
// which would round differently from NumPy's product-then-sum.
__device__ __forceinline__ double femopt_mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float femopt_mul_rn(float a, float b) { return __fmul_rn(a, b); }

// data[s] = sum_{t = ptr[s]}^{ptr[s+1]-1} scale[cell[t]] * values[t]
//   values: the kept element-matrix entries of the unit (full-material) element matrices,
//   sorted by slot; cell: their cells; ptr: (nnz + 1) offsets of each slot's entries.
template <typename T>
__global__ void femopt_assembly_csr_gather(
    const T* __restrict__ scale, const T* __restrict__ values, const int* __restrict__ cell,
    const femopt_index* __restrict__ ptr, T* __restrict__ data, femopt_index nnz)
{
    for (femopt_index s = femopt_thread_id(); s < nnz; s += femopt_thread_count()) {
        const femopt_index end = ptr[s + 1];
        T acc = T(0);
        for (femopt_index t = ptr[s]; t < end; ++t)
            acc = acc + femopt_mul_rn(scale[cell[t]], values[t]);
        data[s] = acc;
    }
}

// The atomic alternative, kept for the benchmark (benchmarks/tet4_assembly.py): one thread
// per kept entry t in cell order, data[slot[t]] += scale[cell[t]] * values[t]; data must
// be zeroed first and the order of the sums varies from run to run.
template <typename T>
__global__ void femopt_assembly_csr_scatter_cells(
    const T* __restrict__ scale, const T* __restrict__ values, const int* __restrict__ cell,
    const int* __restrict__ slot, T* data, femopt_index n)
{
    for (femopt_index t = femopt_thread_id(); t < n; t += femopt_thread_count())
        atomicAdd(data + slot[t], scale[cell[t]] * values[t]);
}
