// Products of sparse matrices whose patterns never change: C = A B in CSR, values only.
//
// The pattern of C (rows sorted by column) is computed once on the host; at every call one
// thread per row i of A adds a_ik b_kj into C's slot of (i, j), found by a binary search of
// row i's columns. A thread owns its row of C: no atomics, each value summed in a fixed
// order (A's row order, then B's), so the product is reproducible from run to run. The
// transposed product below adds atomically: its sums' order varies between runs. These
// thread-per-row kernels are the reference of the warp-per-row ones at the end (the
// default: fixed_spgemm.WARP), which read B's rows coalesced.
template <typename T>
__global__ void femopt_solvers_fixed_spgemm(
    const int* __restrict__ a_ptr, const int* __restrict__ a_idx, const T* __restrict__ a_val,
    const int* __restrict__ b_ptr, const int* __restrict__ b_idx, const T* __restrict__ b_val,
    const int* __restrict__ c_ptr, const int* __restrict__ c_idx, T* __restrict__ c_val,
    femopt_index n_rows)
{
    for (femopt_index i = femopt_thread_id(); i < n_rows; i += femopt_thread_count()) {
        const int c0 = c_ptr[i], c1 = c_ptr[i + 1];
        for (int q = c0; q < c1; ++q) c_val[q] = T(0);
        for (int p = a_ptr[i]; p < a_ptr[i + 1]; ++p) {
            const int k = a_idx[p];
            const T a = a_val[p];
            for (int r = b_ptr[k]; r < b_ptr[k + 1]; ++r) {
                const int j = b_idx[r];
                int lo = c0, hi = c1 - 1;
                while (lo < hi) {
                    const int mid = (lo + hi) >> 1;
                    if (c_idx[mid] < j) lo = mid + 1; else hi = mid;
                }
                c_val[lo] += a * b_val[r];
            }
        }
    }
}

// C = A^T B, A and B with the same rows: one thread per shared row i adds a_ik b_ij into
// C's slot of (k, j) (binary search of row k) atomically; C must be zeroed first.
template <typename T>
__global__ void femopt_solvers_fixed_spgemm_tn(
    const int* __restrict__ a_ptr, const int* __restrict__ a_idx, const T* __restrict__ a_val,
    const int* __restrict__ b_ptr, const int* __restrict__ b_idx, const T* __restrict__ b_val,
    const int* __restrict__ c_ptr, const int* __restrict__ c_idx, T* __restrict__ c_val,
    femopt_index n_rows)
{
    for (femopt_index i = femopt_thread_id(); i < n_rows; i += femopt_thread_count()) {
        const int b0 = b_ptr[i], b1 = b_ptr[i + 1];
        for (int p = a_ptr[i]; p < a_ptr[i + 1]; ++p) {
            const int k = a_idx[p];
            const T a = a_val[p];
            const int c0 = c_ptr[k], c1 = c_ptr[k + 1];
            for (int r = b0; r < b1; ++r) {
                const int j = b_idx[r];
                int lo = c0, hi = c1 - 1;
                while (lo < hi) {
                    const int mid = (lo + hi) >> 1;
                    if (c_idx[mid] < j) lo = mid + 1; else hi = mid;
                }
                atomicAdd(c_val + lo, a * b_val[r]);
            }
        }
    }
}

// The same two products with a warp per row (i): the warp's lanes take the entries of
// B's row in turn (consecutive lanes, consecutive entries: coalesced reads), each lane
// searching C's row for its column; between A's entries the warp synchronizes, so a
// slot of C is added to in A's row order. C = A B thus keeps the thread-per-row
// kernel's order of each sum (reproducible, no atomics); C = A^T B adds atomically.
template <typename T>
__device__ __forceinline__ int femopt_solvers_slot(const int* __restrict__ c_idx, int lo,
                                                   int hi, int j)
{
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (c_idx[mid] < j) lo = mid + 1; else hi = mid;
    }
    return lo;
}

template <typename T>
__global__ void femopt_solvers_fixed_spgemm_warp(
    const int* __restrict__ a_ptr, const int* __restrict__ a_idx, const T* __restrict__ a_val,
    const int* __restrict__ b_ptr, const int* __restrict__ b_idx, const T* __restrict__ b_val,
    const int* __restrict__ c_ptr, const int* __restrict__ c_idx, T* __restrict__ c_val,
    femopt_index n_rows)
{
    const int lane = threadIdx.x & 31;
    for (femopt_index i = femopt_thread_id() >> 5; i < n_rows;
         i += femopt_thread_count() >> 5) {
        const int c0 = c_ptr[i], c1 = c_ptr[i + 1];
        for (int q = c0 + lane; q < c1; q += 32) c_val[q] = T(0);
        __syncwarp();
        for (int p = a_ptr[i]; p < a_ptr[i + 1]; ++p) {
            const int k = a_idx[p];
            const T a = a_val[p];
            for (int r = b_ptr[k] + lane; r < b_ptr[k + 1]; r += 32) {
                const int q = femopt_solvers_slot<T>(c_idx, c0, c1 - 1, b_idx[r]);
                c_val[q] += a * b_val[r];
            }
            __syncwarp();
        }
    }
}

template <typename T>
__global__ void femopt_solvers_fixed_spgemm_tn_warp(
    const int* __restrict__ a_ptr, const int* __restrict__ a_idx, const T* __restrict__ a_val,
    const int* __restrict__ b_ptr, const int* __restrict__ b_idx, const T* __restrict__ b_val,
    const int* __restrict__ c_ptr, const int* __restrict__ c_idx, T* __restrict__ c_val,
    femopt_index n_rows)
{
    const int lane = threadIdx.x & 31;
    for (femopt_index i = femopt_thread_id() >> 5; i < n_rows;
         i += femopt_thread_count() >> 5) {
        const int b0 = b_ptr[i], b1 = b_ptr[i + 1];
        for (int p = a_ptr[i]; p < a_ptr[i + 1]; ++p) {
            const int k = a_idx[p];
            const T a = a_val[p];
            const int c0 = c_ptr[k], c1 = c_ptr[k + 1];
            for (int r = b0 + lane; r < b1; r += 32) {
                const int q = femopt_solvers_slot<T>(c_idx, c0, c1 - 1, b_idx[r]);
                atomicAdd(c_val + q, a * b_val[r]);
            }
        }
    }
}
