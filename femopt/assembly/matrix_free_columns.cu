// Matrix-free hex8 operator, z-marching variant: y = alpha A u + beta z on grid-layout
// vectors (index c * n_nodes + node), A = D K D + (I - D), K = sum_e scale[e] K0.
//
// One thread per (x, y) node column and chunk of z: it keeps two node layers of its 3x3
// neighbourhood in registers (lo, hi) and marches up, loading one new layer (9 K values)
// per node instead of gathering 8 cells x 8 nodes, and computes its own K rows of the 8
// cells around each node (no atomics). K0 is not read from memory: the module is compiled
// with a prelude that defines femopt_k0(i) (the ND x ND element matrix, row-major, as
// literals whose magnitudes are snapped to its few distinct values: 10 for 3D
// elasticity), so the entries are FMA operands held in a handful of registers.

__device__ __forceinline__ constexpr int femopt_col_cx(int b) { return (((b & 3) + 1) >> 1) & 1; }
__device__ __forceinline__ constexpr int femopt_col_cy(int b) { return ((b & 3) >> 1) & 1; }
__device__ __forceinline__ constexpr int femopt_col_cz(int b) { return b >> 2; }
// VTK corner index of offsets (px, py, pz)
__device__ __forceinline__ constexpr int femopt_col_corner(int px, int py, int pz) {
    return (py ? (px ? 2 : 3) : (px ? 1 : 0)) + 4 * pz;
}

// L[q * K + c] = u at node (ix + q % 3 - 1, iy + q / 3 - 1, iz), component c (0 outside
// the grid). One pointer per row and component; the x neighbours are immediate offsets of
// it, loaded under a predicate (never out of the array).
template <typename T, int K>
__device__ __forceinline__ void femopt_col_load(T* L, const T* __restrict__ u, int ix, int iy,
                                                int iz, int nnx, int nny, femopt_index n_nodes)
{
    const bool has_left = ix > 0, has_right = ix + 1 < nnx;
    const femopt_index centre = ix + (femopt_index)nnx * (iy + (femopt_index)nny * iz);
#pragma unroll
    for (int r = 0; r < 3; ++r) {
        const bool row_in = (r != 0 || iy > 0) && (r != 2 || iy + 1 < nny);
#pragma unroll
        for (int c = 0; c < K; ++c) {
            const T* p = u + c * n_nodes + centre + (femopt_index)(r - 1) * nnx;
            T left = T(0), mid = T(0), right = T(0);
            if (row_in) {
                mid = __ldg(p);
                if (has_left) left = __ldg(p - 1);
                if (has_right) right = __ldg(p + 1);
            }
            L[(3 * r) * K + c] = left;
            L[(3 * r + 1) * K + c] = mid;
            L[(3 * r + 2) * K + c] = right;
        }
    }
}

// acc += the node's rows of K_e u_e for the 4 cells of cell layer ez around column (ix, iy);
// lo / hi hold node layers ez / ez + 1; TOP: the node lies on the cells' top face.
template <typename T, int K, bool TOP>
__device__ __forceinline__ void femopt_col_cells(T* acc, const T* lo, const T* hi,
                                                 const T* __restrict__ scale, int ix, int iy,
                                                 int ez, int nx, int ny)
{
    constexpr int ND = 8 * K;
#pragma unroll
    for (int cyo = 0; cyo < 2; ++cyo) {
#pragma unroll
        for (int cxo = 0; cxo < 2; ++cxo) {
            const int ex = ix - 1 + cxo, ey = iy - 1 + cyo;
            if (ex < 0 || ex >= nx || ey < 0 || ey >= ny) continue;
            const T s = __ldg(scale + ex + (femopt_index)nx * (ey + (femopt_index)ny * ez));
            const int a = femopt_col_corner(1 - cxo, 1 - cyo, TOP ? 1 : 0);
            // two partial sums per row (bottom and top corners): shorter FMA chains
            T sum_lo[K], sum_hi[K];
#pragma unroll
            for (int i = 0; i < K; ++i) sum_lo[i] = sum_hi[i] = T(0);
#pragma unroll
            for (int b = 0; b < 8; ++b) {
                const int q = (cxo + femopt_col_cx(b)) + 3 * (cyo + femopt_col_cy(b));
#pragma unroll
                for (int c = 0; c < K; ++c) {
                    const T v = femopt_col_cz(b) ? hi[q * K + c] : lo[q * K + c];
#pragma unroll
                    for (int i = 0; i < K; ++i) {
                        const T k = T(femopt_k0((a * K + i) * ND + b * K + c));
                        if (femopt_col_cz(b)) sum_hi[i] += k * v;
                        else sum_lo[i] += k * v;
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < K; ++i) acc[i] += s * (sum_lo[i] + sum_hi[i]);
        }
    }
}

// Node (ix, iy, iz): below = node layer iz - 1, here = layer iz on entry; on exit below
// holds layer iz + 1 (when it exists) and here is unchanged.
template <typename T, int K>
__device__ __forceinline__ void femopt_col_step(
    T* below, T* here, const T* __restrict__ u, const T* __restrict__ scale,
    const unsigned char* __restrict__ free_mask, const T* z, T* y, T alpha, T beta,
    int ix, int iy, int iz, int nx, int ny, int nz, femopt_index n_nodes, const void* w, int wkind, T gamma)
{
    T acc[K];
#pragma unroll
    for (int c = 0; c < K; ++c) acc[c] = T(0);
    if (iz > 0) femopt_col_cells<T, K, true>(acc, below, here, scale, ix, iy, iz - 1, nx, ny);
    if (iz < nz) {
        femopt_col_load<T, K>(below, u, ix, iy, iz + 1, nx + 1, ny + 1, n_nodes);
        femopt_col_cells<T, K, false>(acc, here, below, scale, ix, iy, iz, nx, ny);
    }
    const femopt_index node = ix + (femopt_index)(nx + 1) * (iy + (femopt_index)(ny + 1) * iz);
#pragma unroll
    for (int c = 0; c < K; ++c) {
        const femopt_index idx = c * n_nodes + node;
        const T v = free_mask[idx] ? acc[c] : __ldg(u + idx);
        femopt_apply_write(y, z, idx, v, alpha, beta, w, wkind, gamma);
    }
}

// Args: as femopt_assembly_hex8_apply; chunk: nodes along z per thread. Blocks of 128
// threads; MIN_BLOCKS per multiprocessor caps the registers (trading ILP for occupancy).
template <typename T, int K, int MIN_BLOCKS>
__global__ void __launch_bounds__(128, MIN_BLOCKS) femopt_assembly_hex8_apply_columns(
    const T* __restrict__ u, const T* __restrict__ scale,
    const unsigned char* __restrict__ free_mask, const T* z, T* y, T alpha, T beta,
    int nx, int ny, int nz, int chunk, const void* w, int wkind, T gamma)
{
    const int nnx = nx + 1, nny = ny + 1, nnz = nz + 1;
    const femopt_index n_nodes = (femopt_index)nnx * nny * nnz;
    femopt_index t = femopt_thread_id();
    const int ix = (int)(t % nnx);
    t /= nnx;
    const int iy = (int)(t % nny);
    t /= nny;
    if (t * chunk >= nnz) return;
    const int z0 = (int)(t * chunk);
    const int z1 = min(nnz, z0 + chunk);
    T lo[9 * K], hi[9 * K];
    // lo = node layer z0 - 1, hi = layer z0; each step leaves (layer iz, layer iz + 1) in
    // (its second, its first) array, so steps alternate the roles instead of copying
    if (z0 > 0) femopt_col_load<T, K>(lo, u, ix, iy, z0 - 1, nnx, nny, n_nodes);
    femopt_col_load<T, K>(hi, u, ix, iy, z0, nnx, nny, n_nodes);
    for (int iz = z0; iz < z1; iz += 2) {
        femopt_col_step<T, K>(lo, hi, u, scale, free_mask, z, y, alpha, beta, ix, iy, iz,
                              nx, ny, nz, n_nodes, w, wkind, gamma);
        if (iz + 1 < z1)
            femopt_col_step<T, K>(hi, lo, u, scale, free_mask, z, y, alpha, beta, ix, iy,
                                  iz + 1, nx, ny, nz, n_nodes, w, wkind, gamma);
    }
}
