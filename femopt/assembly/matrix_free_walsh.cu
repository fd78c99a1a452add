// Matrix-free hex8 operator, Walsh variant: y = alpha A u + beta z on grid-layout vectors
// (index c * n_nodes + node), A = D K D + (I - D), K = sum_e scale[e] K0.
//
// Cell by cell: K0 u_e = W M W u_e with W the Walsh transform over the cube's corners
// (butterflies, per component) and M = W K0 W / 64, which for a mirror-symmetric K0 is
// block diagonal (elasticity: 45 non-zeros instead of 576; femopt/assembly/walsh.py). The
// module is compiled with a prelude defining femopt_walsh_m(i) (M row-major, rows and
// columns c * 8 + mx + 2 my + 4 mz, as literals) and femopt_walsh_row(i) (row i has a
// non-zero); the unrolled product multiplies by the non-zeros only.
//
// A block of 32 x ROWS threads is a tile of cells marching up in z through a chunk of node
// layers. Thread (tx, ty) owns cell (ex, ey) = (X0 - 1 + tx, Y0 - 1 + ty) of each layer
// and node (ex, ey) (its cell's corner 0), X0 = 31 blockIdx.x, Y0 = (ROWS - 1) blockIdx.y:
// the threads with tx = 0 or ty = 0 compute the halo cells of the tile and write nothing,
// so a tile writes 31 x (ROWS - 1) nodes and no atomics are needed. Per cell layer:
//   1. the threads load the tile's 33 x (ROWS + 1) nodes of the new node layer into
//      shared memory (one or two each), then each takes its cell's top face from there
//      and Walsh-transforms it in x and y;
//      the bottom face's transform is the previous layer's top one;
//   2. the z butterfly (with the cell's scale), the product with M, the inverse z
//      butterfly: the forces on the bottom and top face in x-y Walsh space;
//   3. bottom forces plus the previous cell layer's top forces are this cell column's
//      forces on the node layer; one inverse x-y transform gives its four corners;
//   4. the x neighbour's corners by a warp shuffle, the y neighbour's through shared
//      memory; the node's sum is written once, masked like the other apply kernels.
// A chunk starts one cell layer below its first node layer (only that layer's top forces
// are kept); the top node layer of the grid has cells below only. Two barriers per layer;
// node buffers alternate between layers.

#define FEMOPT_WALSH_TX 32

// x-y Walsh transform of a face from corners (bx, by): out[mx + 2 my]. The inverse is the
// same butterfly (the factor 1/64 of both transforms is in M).
template <typename T>
__device__ __forceinline__ void femopt_walsh_xy(T u00, T u10, T u01, T u11, T* out)
{
    const T a0 = u00 + u10, a1 = u00 - u10, b0 = u01 + u11, b1 = u01 - u11;
    out[0] = a0 + b0;
    out[1] = a1 + b1;
    out[2] = a0 - b0;
    out[3] = a1 - b1;
}

// The tile's node buffer of one layer holds (ROWS + 1) x 33 nodes, entry e = node
// (X0 - 1 + e % 33, Y0 - 1 + e / 33); thread t = tx + 32 ty loads entries t and
// t + 32 ROWS (the second only for the 33 + ROWS entries beyond 32 ROWS).
template <int K, int ROWS>
struct femopt_walsh_tile {
    static constexpr int W = FEMOPT_WALSH_TX + 1, PLANE = (ROWS + 1) * W;
    static constexpr int THREADS = FEMOPT_WALSH_TX * ROWS;
    unsigned idx[K][2];  // c * n_nodes + node offset within a node layer (n_dofs < 2^31)
    bool in[2];     // the entries are grid nodes (else they hold 0)

    __device__ __forceinline__ femopt_walsh_tile(int x0, int y0, int nnx, int nny,
                                                 int n_nodes)
    {
        const int t = threadIdx.x + FEMOPT_WALSH_TX * threadIdx.y;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int e = t + r * THREADS;
            const int jx = x0 - 1 + e % W, jy = y0 - 1 + e / W;
            in[r] = e < PLANE && jx >= 0 && jx < nnx && jy >= 0 && jy < nny;
#pragma unroll
            for (int c = 0; c < K; ++c) idx[c][r] = in[r] ? c * n_nodes + jx + nnx * jy : 0u;
        }
    }
};

// Step 1 for the node layer starting at `layer` (u + iz * plane): own[c] = u at this
// thread's node, hat[c * 4 + q] the x-y transform of its cell's face. buf: this layer's
// node buffer, K x (ROWS + 1) x 33.
template <typename T, int K, int ROWS>
__device__ __forceinline__ void femopt_walsh_face(
    T* own, T* hat, T* buf, const T* __restrict__ layer, const femopt_walsh_tile<K, ROWS>& tile)
{
    using tile_t = femopt_walsh_tile<K, ROWS>;
    constexpr int W = tile_t::W, PLANE = tile_t::PLANE;
    const int t = threadIdx.x + FEMOPT_WALSH_TX * threadIdx.y;
#pragma unroll
    for (int c = 0; c < K; ++c) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            T v = T(0);
            if (tile.in[r]) v = __ldg(layer + tile.idx[c][r]);
            if (r == 0 || t < PLANE - tile_t::THREADS) buf[c * PLANE + t + r * tile_t::THREADS] = v;
        }
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < K; ++c) {
        const T* b = buf + c * PLANE + threadIdx.y * W + threadIdx.x;
        own[c] = b[0];
        femopt_walsh_xy(b[0], b[1], b[W], b[W + 1], hat + c * 4);
    }
}

// Step 2: bot[c * 4 + q], top[c * 4 + q] = the x-y Walsh forces s W M W u on the bottom
// and top face of a cell whose faces have x-y transforms bh, th.
template <typename T, int K>
__device__ __forceinline__ void femopt_walsh_cell(const T* bh, const T* th, T s, T* bot,
                                                  T* top)
{
    constexpr int ND = 8 * K;
    T uh[ND];  // Walsh coefficients times s, index c * 8 + q + 4 mz
#pragma unroll
    for (int c = 0; c < K; ++c) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const T sb = s * bh[c * 4 + q];
            uh[c * 8 + q] = fma(s, th[c * 4 + q], sb);
            uh[c * 8 + q + 4] = fma(-s, th[c * 4 + q], sb);
        }
    }
    T gh[ND];
#pragma unroll
    for (int i = 0; i < ND; ++i) {
        T sum = T(0);
        bool first = true;
#pragma unroll
        for (int j = 0; j < ND; ++j) {
            if (femopt_walsh_m(i * ND + j) != 0.0) {
                const T mij = T(femopt_walsh_m(i * ND + j));
                sum = first ? mij * uh[j] : fma(mij, uh[j], sum);
                first = false;
            }
        }
        gh[i] = sum;
    }
#pragma unroll
    for (int c = 0; c < K; ++c) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int lo = c * 8 + q, hi = lo + 4;
            const bool has_lo = femopt_walsh_row(lo), has_hi = femopt_walsh_row(hi);
            bot[c * 4 + q] = has_lo && has_hi ? gh[lo] + gh[hi]
                           : has_lo ? gh[lo] : has_hi ? gh[hi] : T(0);
            top[c * 4 + q] = has_lo && has_hi ? gh[lo] - gh[hi]
                           : has_lo ? gh[lo] : has_hi ? -gh[hi] : T(0);
        }
    }
}

// The write's operands at this thread's node of a node layer, loaded before the layer's
// work so that their latency hides behind it: the mask, z (beta != 0), the weight w and
// y (gamma != 0) of femopt_apply_write.
template <typename T, int K>
struct femopt_walsh_operands {
    T z[K], w[K], y[K];
    bool free[K];

    __device__ __forceinline__ void load(bool writes, const unsigned* own_idx,
                                         femopt_index layer,
                                         const unsigned char* __restrict__ free_mask,
                                         const T* z_in, const T* y_in, T beta, const void* w_in,
                                         int wkind, T gamma)
    {
#pragma unroll
        for (int c = 0; c < K; ++c) {
            const femopt_index i = layer + own_idx[c];
            free[c] = writes && free_mask[i];
            z[c] = writes && beta != T(0) ? z_in[i] : T(0);
            w[c] = !writes || wkind == 0 ? T(1)
                 : wkind == 2
                     ? (T)__uint_as_float((unsigned int)((const unsigned short*)w_in)[i] << 16)
                     : ((const T*)w_in)[i];
            y[c] = writes && wkind != 0 && gamma != T(0) ? y_in[i] : T(0);
        }
    }
};

// Steps 3 and 4 for node layer iz: acc[c * 4 + q] = this cell column's forces on the node
// layer in x-y Walsh space, own[c] = u at this thread's node (kept on constrained dofs);
// ops: the layer's write operands (femopt_walsh_operands), the write femopt_apply_write's.
template <typename T, int K, int ROWS>
__device__ __forceinline__ void femopt_walsh_write(
    const T* acc, const T* own, T (*rows_above)[ROWS][FEMOPT_WALSH_TX], bool writes,
    const unsigned* own_idx, femopt_index layer, const femopt_walsh_operands<T, K>& ops,
    T* y, T alpha, T beta, int wkind, T gamma)
{
    const int tx = threadIdx.x, ty = threadIdx.y;
    T mine[K];
#pragma unroll
    for (int c = 0; c < K; ++c) {
        T corner[4];
        femopt_walsh_xy(acc[c * 4], acc[c * 4 + 1], acc[c * 4 + 2], acc[c * 4 + 3], corner);
        // corner (bx, by) at index bx + 2 by; lane tx - 1's right corners are ours
        mine[c] = corner[0] + __shfl_up_sync(0xffffffffu, corner[1], 1);
        rows_above[c][ty][tx] = corner[2] + __shfl_up_sync(0xffffffffu, corner[3], 1);
    }
    __syncthreads();
    if (!writes) return;
#pragma unroll
    for (int c = 0; c < K; ++c) {
        const T v = ops.free[c] ? mine[c] + rows_above[c][ty - 1][tx] : own[c];
        // femopt_apply_write's arithmetic (the preamble's) with its operands loaded
        // early: a change to one is a change to both
        T out = beta != T(0) ? alpha * v + beta * ops.z[c] : alpha * v;
        if (wkind != 0) out = gamma != T(0) ? gamma * ops.y[c] + ops.w[c] * out : ops.w[c] * out;
        y[layer + own_idx[c]] = out;
    }
}

// Args: as femopt_assembly_hex8_apply; chunk: node layers per block (blockIdx.z). Blocks of
// 32 x ROWS threads; MIN_BLOCKS per multiprocessor caps the registers.
template <typename T, int K, int ROWS, int MIN_BLOCKS>
__global__ void __launch_bounds__(FEMOPT_WALSH_TX * ROWS, MIN_BLOCKS)
femopt_assembly_hex8_apply_walsh(
    const T* __restrict__ u, const T* __restrict__ scale,
    const unsigned char* __restrict__ free_mask, const T* z, T* y, T alpha, T beta,
    int nx, int ny, int nz, int chunk, const void* w, int wkind, T gamma)
{
    constexpr int PLANE = femopt_walsh_tile<K, ROWS>::PLANE;
    __shared__ T nodes[2][K * PLANE];                    // alternate node layers
    __shared__ T rows_above[K][ROWS][FEMOPT_WALSH_TX];  // y exchange of corner forces
    const int nnx = nx + 1, nny = ny + 1, nnz = nz + 1;
    const femopt_index plane = (femopt_index)nnx * nny;
    const femopt_index n_nodes = plane * nnz;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int x0 = (FEMOPT_WALSH_TX - 1) * blockIdx.x, y0 = (ROWS - 1) * blockIdx.y;
    const int ix = x0 - 1 + tx, iy = y0 - 1 + ty;
    const int n0 = chunk * blockIdx.z;
    const int n1 = min(nnz, n0 + chunk);
    const femopt_walsh_tile<K, ROWS> tile(x0, y0, nnx, nny, (int)n_nodes);
    const bool cell_in = ix >= 0 && ix < nx && iy >= 0 && iy < ny;
    const bool writes = tx > 0 && ty > 0 && ix < nnx && iy < nny;
    const T* cell_scale = scale + (cell_in ? ix + nx * iy : 0);
    const femopt_index cell_plane = (femopt_index)nx * ny;
    unsigned own_idx[K];  // c * n_nodes + this thread's node in its layer
#pragma unroll
    for (int c = 0; c < K; ++c) own_idx[c] = writes ? c * (unsigned)n_nodes + ix + nnx * iy : 0u;

    // own: u at this thread's node of the last face loaded; bh: x-y transform of the next
    // cell's bottom face; toph: the last cell's top forces (x-y Walsh space)
    T own[K], bh[4 * K], toph[4 * K];
    int ez = max(n0 - 1, 0);
    femopt_walsh_face<T, K, ROWS>(own, bh, nodes[ez & 1], u + ez * plane, tile);
#pragma unroll
    for (int i = 0; i < 4 * K; ++i) toph[i] = T(0);
    if (n0 > 0) {  // the cell layer below the chunk: its top forces only
        T s = T(0);
        if (cell_in) s = __ldg(cell_scale + ez * cell_plane);
        T th[4 * K], bot[4 * K];
        femopt_walsh_face<T, K, ROWS>(own, th, nodes[n0 & 1], u + n0 * plane, tile);
        femopt_walsh_cell<T, K>(bh, th, s, bot, toph);
#pragma unroll
        for (int i = 0; i < 4 * K; ++i) bh[i] = th[i];
        ez = n0;
    }
    const int last = min(n1, nz);  // node layers below it have a cell layer above
    // running pointers: the compiler does not strength-reduce ez * plane on its own
    const T* u_next = u + (ez + 1) * plane;
    const T* s_here = cell_scale + ez * cell_plane;
    femopt_index layer = ez * plane;
#pragma unroll 1
    for (; ez < last; ++ez) {
        femopt_walsh_operands<T, K> ops;
        ops.load(writes, own_idx, layer, free_mask, z, y, beta, w, wkind, gamma);
        T s = T(0);
        if (cell_in) s = __ldg(s_here);
        T u_here[K], th[4 * K], bot[4 * K], acc[4 * K];
#pragma unroll
        for (int c = 0; c < K; ++c) u_here[c] = own[c];
        femopt_walsh_face<T, K, ROWS>(own, th, nodes[(ez + 1) & 1], u_next, tile);
        femopt_walsh_cell<T, K>(bh, th, s, bot, acc);
#pragma unroll
        for (int i = 0; i < 4 * K; ++i) {
            const T top = acc[i];
            acc[i] = toph[i] + bot[i];
            toph[i] = top;
            bh[i] = th[i];
        }
        femopt_walsh_write<T, K, ROWS>(acc, u_here, rows_above, writes, own_idx, layer, ops,
                                       y, alpha, beta, wkind, gamma);
        u_next += plane;
        s_here += cell_plane;
        layer += plane;
    }
    if (n1 == nnz) {  // the top node layer: forces of the cells below only
        femopt_walsh_operands<T, K> ops;
        ops.load(writes, own_idx, nz * plane, free_mask, z, y, beta, w, wkind, gamma);
        __syncthreads();  // no face barrier since the last exchange
        femopt_walsh_write<T, K, ROWS>(toph, own, rows_above, writes, own_idx, nz * plane, ops,
                                       y, alpha, beta, wkind, gamma);
    }
}
