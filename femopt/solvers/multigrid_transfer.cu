// Grid transfers of geometric multigrid on grid-layout vectors (index c * n_nodes + node,
// x fastest). The coarse grid has (nx + 1, ny + 1, nz + 1) nodes, the fine one
// (2 nx + 1, ...); coarse node i sits on fine node 2 i. P is bi/trilinear interpolation.
// Each kernel gathers for its output node: no atomics.

// x_fine = P x_coarse, or with ``add`` x_fine += P x_coarse. One thread per fine node, all
// K components: x along the block, one block row per fine (y, z) line (blockIdx.y,
// blockIdx.z), so no thread divides to find its node.
template <typename T, int DIM, int K>
__global__ void femopt_multigrid_prolong(
    const T* __restrict__ xc, T* __restrict__ xf, int nx, int ny, int nz, int add)
{
    const femopt_index cnx = nx + 1, cny = ny + 1, cnz = DIM == 3 ? nz + 1 : 1;
    const femopt_index fnx = 2 * nx + 1, fny = 2 * ny + 1, fnz = DIM == 3 ? 2 * nz + 1 : 1;
    const femopt_index n_fine = fnx * fny * fnz, n_coarse = cnx * cny * cnz;
    const int fx = blockIdx.x * blockDim.x + threadIdx.x;
    if (fx >= fnx) return;
    const int fy = blockIdx.y, fz = blockIdx.z;
    const femopt_index node = fx + fnx * (fy + fny * (femopt_index)fz);
    // per axis: the coarse nodes below and above and their weights (equal on odd nodes)
    const int x0 = fx >> 1, x1 = (fx + 1) >> 1;
    const int y0 = fy >> 1, y1 = (fy + 1) >> 1;
    const int z0 = fz >> 1, z1 = (fz + 1) >> 1;
    const T wx = (fx & 1) ? T(0.5) : T(1), wy = (fy & 1) ? T(0.5) : T(1);
    const T wz = (fz & 1) ? T(0.5) : T(1);
    const int nzs = DIM == 3 ? 2 : 1;
#pragma unroll
    for (int c = 0; c < K; ++c) {
        const T* src = xc + c * n_coarse;
        T v = T(0);
#pragma unroll
        for (int dz = 0; dz < nzs; ++dz) {
            const int cz = dz ? z1 : z0;
            if (dz && z1 == z0) continue;
#pragma unroll
            for (int dy = 0; dy < 2; ++dy) {
                const int cy = dy ? y1 : y0;
                if (dy && y1 == y0) continue;
#pragma unroll
                for (int dx = 0; dx < 2; ++dx) {
                    const int cx = dx ? x1 : x0;
                    if (dx && x1 == x0) continue;
                    v += src[cx + cnx * (cy + cny * (femopt_index)cz)];
                }
            }
        }
        const T p = wx * wy * (DIM == 3 ? wz : T(1)) * v;
        T* dst = xf + c * n_fine + node;
        *dst = add ? *dst + p : p;
    }
}

// xc = D_c P^T r_fine, or with ``accumulate`` xc += D_c P^T r_fine. One thread per coarse
// node, all K components, laid out as the prolongation's threads (on the coarse grid);
// the fine nodes 2i - 1, 2i, 2i + 1 per axis weigh 1/2, 1, 1/2.
template <typename T, int DIM, int K>
__global__ void femopt_multigrid_restrict(
    const T* __restrict__ rf, T* __restrict__ xc, const unsigned char* __restrict__ free_c,
    int nx, int ny, int nz, int accumulate)
{
    const femopt_index cnx = nx + 1, cny = ny + 1, cnz = DIM == 3 ? nz + 1 : 1;
    const femopt_index fnx = 2 * nx + 1, fny = 2 * ny + 1, fnz = DIM == 3 ? 2 * nz + 1 : 1;
    const femopt_index n_fine = fnx * fny * fnz, n_coarse = cnx * cny * cnz;
    const int cx = blockIdx.x * blockDim.x + threadIdx.x;
    if (cx >= cnx) return;
    const int cy = blockIdx.y, cz = blockIdx.z;
    const femopt_index node = cx + cnx * (cy + cny * (femopt_index)cz);
    const int zlo = DIM == 3 ? -1 : 0, zhi = DIM == 3 ? 1 : 0;
#pragma unroll
    for (int c = 0; c < K; ++c) {
        const femopt_index idx = c * n_coarse + node;
        if (!free_c[idx]) {
            if (!accumulate) xc[idx] = T(0);
            continue;
        }
        const T* src = rf + c * n_fine;
        T v = T(0);
#pragma unroll
        for (int dz = zlo; dz <= zhi; ++dz) {
            const int fz = 2 * cz + dz;
            if (fz < 0 || fz >= fnz) continue;
            const T wz = dz ? T(0.5) : T(1);
#pragma unroll
            for (int dy = -1; dy <= 1; ++dy) {
                const int fy = 2 * cy + dy;
                if (fy < 0 || fy >= fny) continue;
                const T wy = dy ? T(0.5) : T(1);
                T row = T(0);
#pragma unroll
                for (int dx = -1; dx <= 1; ++dx) {
                    const int fx = 2 * cx + dx;
                    if (fx < 0 || fx >= fnx) continue;
                    row += (dx ? T(0.5) : T(1)) * src[fx + fnx * (fy + fny * (femopt_index)fz)];
                }
                v += wz * wy * row;
            }
        }
        xc[idx] = accumulate ? xc[idx] + v : v;
    }
}
