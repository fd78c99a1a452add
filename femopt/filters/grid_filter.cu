// Density filter of a structured grid as a stencil (one thread per cell, a gather):
//   out[i] = post_i * sum_j w_ij pre_j x[j],   w_ij = max(0, radius - |c_i - c_j|),
// over the cells j within radius of cell i: the stencil's entries, offsets[3 k + a]
// along axis a and weights[k], k < n_offsets, are the host's (GridDensityFilter.entries:
// the weights above ``cut``, z slowest and x fastest), summed in that order. The filter is
// rho = (H x) / Hs: post = 1 / Hs (``scale`` bit 2); its chain rule is
// H^T (g / Hs) = H (g / Hs) (H is symmetric): pre = 1 / Hs (bit 1); a factor not asked
// for is 1. 1 / Hs is a table on the proxy grid (mx x my x mz cells, x fastest): a cell's
// value is that of its proxy cell, whose stencil the box's faces cut as they cut its own.

// The proxy index of cell j of an axis of n cells, reach r: j near the low end, as far
// from the high end of an axis of m = min(n, 2r + 1) cells near the high end, else r.
__device__ __forceinline__ int femopt_filters_proxy(int j, int n, int r, int m)
{
    return j < r ? j : (n - 1 - j < r ? m - n + j : r);
}

template <typename T>
__global__ void femopt_filters_density_stencil(
    const T* __restrict__ x, const double* __restrict__ inv_hs, int scale,
    T* __restrict__ out, int nx, int ny, int nz, int rx, int ry, int rz,
    int mx, int my, int mz, const int* __restrict__ offsets,
    const double* __restrict__ weights, int n_offsets)
{
    const femopt_index n = (femopt_index)nx * ny * nz;
    const femopt_index i = femopt_thread_id();
    if (i >= n) return;
    const bool pre = scale & 1;
    const int ix = (int)(i % nx);
    const int iy = (int)((i / nx) % ny);
    const int iz = (int)(i / ((femopt_index)nx * ny));
    T sum = T(0);
    for (int k = 0; k < n_offsets; ++k) {
        const int dx = offsets[3 * k], dy = offsets[3 * k + 1], dz = offsets[3 * k + 2];
        const int jx = ix + dx, jy = iy + dy, jz = iz + dz;
        if (jx < 0 || jx >= nx || jy < 0 || jy >= ny || jz < 0 || jz >= nz) continue;
        const T w = (T)weights[k];
        const femopt_index j = i + dx + (femopt_index)nx * (dy + (femopt_index)ny * dz);
        if (pre) {
            const int p = femopt_filters_proxy(jx, nx, rx, mx)
                + mx * (femopt_filters_proxy(jy, ny, ry, my)
                        + my * femopt_filters_proxy(jz, nz, rz, mz));
            sum += w * ((T)inv_hs[p] * x[j]);
        } else {
            sum += w * x[j];
        }
    }
    if (scale & 2) {
        const int p = femopt_filters_proxy(ix, nx, rx, mx)
            + mx * (femopt_filters_proxy(iy, ny, ry, my)
                    + my * femopt_filters_proxy(iz, nz, rz, mz));
        out[i] = (T)inv_hs[p] * sum;
    } else {
        out[i] = sum;
    }
}
