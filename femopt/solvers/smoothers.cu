// One fused step of the polynomial (Jacobi / Chebyshev) smoothers:
//   d <- c1 d + c2 inv_diag r,   x <- x + d.
// c1 == 0 ignores the old d (it may hold anything, NaN included).
template <typename T>
__global__ void femopt_multigrid_smooth_step(
    T* __restrict__ x, T* __restrict__ d, const T* __restrict__ r,
    const T* __restrict__ inv_diag, T c1, T c2, femopt_index n)
{
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        const T step = c2 * inv_diag[i] * r[i];
        const T di = c1 != T(0) ? c1 * d[i] + step : step;
        d[i] = di;
        x[i] += di;
    }
}
