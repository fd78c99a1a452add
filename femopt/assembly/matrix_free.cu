// Matrix-free operator of a structured quad4/hex8 grid: y = alpha A u + beta z.
//
// Vectors are in the grid layout (component-major: index = c * n_nodes + node, nodes x
// fastest). A = D K D + (I - D) with D the free-dof mask; u vanishes on constrained dofs.
// One thread per node gathers the 2^DIM cells around it and computes its own K rows of
// each cell's K_e u_e: no atomics, every cell's work is done once per corner row block.
//
// Cell matrices: K_e = sum_{ch < NCHILD} scale[e * NCHILD + ch] * G_ch, with the G_ch
// (NCHILD = 1: the element matrix K0; NCHILD = 2^DIM: the child matrices of a Galerkin
// level) in constant memory, so that with the corner loops unrolled every entry is a
// compile-time constant-bank operand of its FMA.

#define FEMOPT_MAX_ND 24

__constant__ double femopt_ke1_f64[FEMOPT_MAX_ND * FEMOPT_MAX_ND];
__constant__ float femopt_ke1_f32[FEMOPT_MAX_ND * FEMOPT_MAX_ND];
__constant__ double femopt_ke8_f64[8 * FEMOPT_MAX_ND * FEMOPT_MAX_ND];
__constant__ float femopt_ke8_f32[8 * FEMOPT_MAX_ND * FEMOPT_MAX_ND];

template <typename T, int NCHILD> struct femopt_ke_table;
template <> struct femopt_ke_table<double, 1> {
    static __device__ __forceinline__ const double* get() { return femopt_ke1_f64; }
};
template <> struct femopt_ke_table<float, 1> {
    static __device__ __forceinline__ const float* get() { return femopt_ke1_f32; }
};
template <> struct femopt_ke_table<double, 4> {
    static __device__ __forceinline__ const double* get() { return femopt_ke8_f64; }
};
template <> struct femopt_ke_table<float, 4> {
    static __device__ __forceinline__ const float* get() { return femopt_ke8_f32; }
};
template <> struct femopt_ke_table<double, 8> {
    static __device__ __forceinline__ const double* get() { return femopt_ke8_f64; }
};
template <> struct femopt_ke_table<float, 8> {
    static __device__ __forceinline__ const float* get() { return femopt_ke8_f32; }
};

// Offsets of corner a of a quad4 (a < 4) or hex8 cell, VTK order.
__device__ __forceinline__ constexpr int femopt_cx(int a) { return (((a & 3) + 1) >> 1) & 1; }
__device__ __forceinline__ constexpr int femopt_cy(int a) { return ((a & 3) >> 1) & 1; }
__device__ __forceinline__ constexpr int femopt_cz(int a) { return a >> 2; }

// Args:
//   u: (K * n_nodes) input, zero on constrained dofs.
//   scale: (n_cells * NCHILD) cell factors.
//   free_mask: (K * n_nodes) 1 on free dofs, 0 on constrained ones.
//   z: (K * n_nodes) added with factor beta (ignored when beta == 0).
//   y: (K * n_nodes) output; may alias z, never u.
//   nx, ny, nz: cells per axis (nz = 1 in 2D).
//   w, wkind, gamma: an optional per-dof weight of the write (femopt_apply_write).
template <typename T, int DIM, int K, int NCHILD>
__device__ __forceinline__ void femopt_grid_apply(
    const T* __restrict__ u, const T* __restrict__ scale,
    const unsigned char* __restrict__ free_mask, const T* z, T* y, T alpha, T beta,
    int nx, int ny, int nz, const void* w, int wkind, T gamma)
{
    constexpr int NC = 1 << DIM;
    constexpr int ND = NC * K;
    const femopt_index nnx = nx + 1, nny = ny + 1;
    const femopt_index nnz = DIM == 3 ? nz + 1 : 1;
    const femopt_index n_nodes = nnx * nny * nnz;
    const femopt_index node = femopt_thread_id();
    if (node >= n_nodes) return;
    const int ix = (int)(node % nnx);
    const int iy = (int)((node / nnx) % nny);
    const int iz = (int)(node / (nnx * nny));
    const T* ke = femopt_ke_table<T, NCHILD>::get();
    T acc[K];
#pragma unroll
    for (int i = 0; i < K; ++i) acc[i] = T(0);
#pragma unroll
    for (int a = 0; a < NC; ++a) {
        // this node is corner a of the cell whose corner 0 is (ix - cx, iy - cy, iz - cz)
        const int ex = ix - femopt_cx(a), ey = iy - femopt_cy(a), ez = iz - femopt_cz(a);
        if (ex < 0 || ex >= nx || ey < 0 || ey >= ny) continue;
        if (DIM == 3 && (ez < 0 || ez >= nz)) continue;
        const femopt_index cell = ex + (femopt_index)nx * (ey + (femopt_index)ny * ez);
        const femopt_index base = ex + nnx * (ey + nny * ez);
        T ue[ND];
#pragma unroll
        for (int b = 0; b < NC; ++b) {
            const femopt_index nb = base + femopt_cx(b) + nnx * (femopt_cy(b) + nny * femopt_cz(b));
#pragma unroll
            for (int c = 0; c < K; ++c) ue[b * K + c] = __ldg(u + c * n_nodes + nb);
        }
        if (NCHILD == 1) {
            const T s = __ldg(scale + cell);
#pragma unroll
            for (int i = 0; i < K; ++i) {
                T sum = T(0);
#pragma unroll
                for (int j = 0; j < ND; ++j) sum += ke[(a * K + i) * ND + j] * ue[j];
                acc[i] += s * sum;
            }
        } else {
#pragma unroll 1
            for (int ch = 0; ch < NCHILD; ++ch) {
                const T s = __ldg(scale + cell * NCHILD + ch);
                const T* g = ke + ch * ND * ND;
#pragma unroll
                for (int i = 0; i < K; ++i) {
                    T sum = T(0);
#pragma unroll
                    for (int j = 0; j < ND; ++j) sum += g[(a * K + i) * ND + j] * ue[j];
                    acc[i] += s * sum;
                }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < K; ++c) {
        const femopt_index idx = c * n_nodes + node;
        const T v = free_mask[idx] ? acc[c] : __ldg(u + idx);
        femopt_apply_write(y, z, idx, v, alpha, beta, w, wkind, gamma);
    }
}

template <typename T, int K, int NCHILD>
__global__ void femopt_assembly_hex8_apply(
    const T* __restrict__ u, const T* __restrict__ scale,
    const unsigned char* __restrict__ free_mask, const T* z, T* y, T alpha, T beta,
    int nx, int ny, int nz, const void* w, int wkind, T gamma)
{
    femopt_grid_apply<T, 3, K, NCHILD>(u, scale, free_mask, z, y, alpha, beta, nx, ny, nz,
                                       w, wkind, gamma);
}

template <typename T, int K, int NCHILD>
__global__ void femopt_assembly_quad4_apply(
    const T* __restrict__ u, const T* __restrict__ scale,
    const unsigned char* __restrict__ free_mask, const T* z, T* y, T alpha, T beta,
    int nx, int ny, int nz, const void* w, int wkind, T gamma)
{
    femopt_grid_apply<T, 2, K, NCHILD>(u, scale, free_mask, z, y, alpha, beta, nx, ny, 1,
                                       w, wkind, gamma);
}
