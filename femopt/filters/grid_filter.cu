// Density filter of a structured grid as a stencil (one thread per cell, a gather):
//   out[i] = post[i] * sum_j w_ij pre[j] x[j],   w_ij = max(0, radius - |c_i - c_j|),
// over the cells j within radius of cell i (|offset| <= r per axis), a weight not above
// ``cut`` left out (pairs at the radius within rounding, as on the host). pre / post may
// be null (factor 1). The filter is rho = (H x) / Hs: post = 1 / Hs; its chain rule is
// H^T (g / Hs) = H (g / Hs) (H is symmetric): pre = 1 / Hs.
template <typename T>
__global__ void femopt_filters_density_stencil(
    const T* __restrict__ x, const T* __restrict__ pre, const T* __restrict__ post,
    T* __restrict__ out, int nx, int ny, int nz, int rx, int ry, int rz,
    double hx, double hy, double hz, double radius, double cut)
{
    const femopt_index n = (femopt_index)nx * ny * nz;
    const femopt_index i = femopt_thread_id();
    if (i >= n) return;
    const int ix = (int)(i % nx);
    const int iy = (int)((i / nx) % ny);
    const int iz = (int)(i / ((femopt_index)nx * ny));
    T sum = T(0);
    for (int dz = -rz; dz <= rz; ++dz) {
        const int jz = iz + dz;
        if (jz < 0 || jz >= nz) continue;
        for (int dy = -ry; dy <= ry; ++dy) {
            const int jy = iy + dy;
            if (jy < 0 || jy >= ny) continue;
            const double d2yz = (dy * hy) * (dy * hy) + (dz * hz) * (dz * hz);
            const femopt_index row = (femopt_index)nx * (jy + (femopt_index)ny * jz);
            for (int dx = -rx; dx <= rx; ++dx) {
                const int jx = ix + dx;
                if (jx < 0 || jx >= nx) continue;
                const double wd = radius - sqrt(d2yz + (dx * hx) * (dx * hx));
                if (wd <= cut) continue;
                const T w = (T)wd;
                const femopt_index j = row + jx;
                sum += w * (pre ? pre[j] * x[j] : x[j]);
            }
        }
    }
    out[i] = post ? post[i] * sum : sum;
}
