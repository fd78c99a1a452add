// The polynomial (Jacobi / Chebyshev) smoothers' element-wise kernels. D^-1 is stored as
// D: the V-cycle's real type T itself, or (T float) bfloat16 bits, the top 16 bits of a
// float32 (InverseDiagonal in smoothers.py rounds them, to nearest even, with integer
// operations on NumPy and CuPy alike).
//
// Products and sums are rounded one by one (no FMA contraction) in the order of the NumPy
// twin (smooth_step_numpy, InverseDiagonal.times), so the two agree bit for bit.

__device__ __forceinline__ double femopt_smoother_mul(double a, double b) {
    return __dmul_rn(a, b);
}
__device__ __forceinline__ float femopt_smoother_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double femopt_smoother_add(double a, double b) {
    return __dadd_rn(a, b);
}
__device__ __forceinline__ float femopt_smoother_add(float a, float b) { return __fadd_rn(a, b); }

// D^-1 as T: stored as T, or bfloat16 bits widened to the float32 they stand for (exact)
__device__ __forceinline__ double femopt_inverse_diagonal(double v) { return v; }
__device__ __forceinline__ float femopt_inverse_diagonal(float v) { return v; }
__device__ __forceinline__ float femopt_inverse_diagonal(unsigned short bits) {
    return __uint_as_float((unsigned int)bits << 16);
}

// One fused step of the smoothers:
//   d <- c1 d + c2 D^-1 r,   x <- x + d   (assign: x <- d, x not read: a zero start).
// c1 == 0 ignores the old d (it may hold anything, NaN included) and takes (D^-1 r) c2;
// otherwise c1 d + (c2 D^-1) r, as the twin does.
template <typename T, typename D>
__global__ void femopt_multigrid_smooth_step(
    T* __restrict__ x, T* __restrict__ d, const T* __restrict__ r,
    const D* __restrict__ inv_diag, T c1, T c2, int assign, femopt_index n)
{
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        const T inv = femopt_inverse_diagonal(inv_diag[i]);
        const T di = c1 != T(0)
            ? femopt_smoother_add(femopt_smoother_mul(c1, d[i]),
                                  femopt_smoother_mul(femopt_smoother_mul(c2, inv), r[i]))
            : femopt_smoother_mul(femopt_smoother_mul(inv, r[i]), c2);
        d[i] = di;
        x[i] = assign ? di : femopt_smoother_add(x[i], di);
    }
}

// out <- D^-1 r (Lanczos' z of the smoothers' operator D^-1 A); out may be r
template <typename T, typename D>
__global__ void femopt_multigrid_inverse_diagonal_times(
    const D* __restrict__ inv_diag, const T* r, T* out, femopt_index n)
{
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count())
        out[i] = femopt_smoother_mul(femopt_inverse_diagonal(inv_diag[i]), r[i]);
}

// bits <- the bfloat16 nearest to v (ties to even), for finite v and infinities (not NaN):
// the integer rounding of bfloat16_bits in smoothers.py, operation for operation
template <typename T>
__global__ void femopt_multigrid_bfloat16_bits(
    const T* __restrict__ v, unsigned short* __restrict__ bits, femopt_index n)
{
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        const unsigned int u = __float_as_uint(v[i]);
        bits[i] = (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }
}

// Lanczos (CG on D~^-1 A) without its z = D~^-1 r, in the twin's order of roundings:
//   r <- r - (alpha q);  out[0] += r . (D~^-1 r)   (float64 sums, one per block)
template <typename T, typename D>
__global__ void femopt_multigrid_lanczos_r(
    T* __restrict__ r, const T* __restrict__ q, const D* __restrict__ inv_diag, T alpha,
    double* out, femopt_index n)
{
    double s = 0.0;
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        const T ri = femopt_smoother_add(r[i], -femopt_smoother_mul(alpha, q[i]));
        r[i] = ri;
        s += (double)ri * (double)femopt_smoother_mul(femopt_inverse_diagonal(inv_diag[i]), ri);
    }
    femopt_block_sum_add(s, out);
}

//   p <- (p beta) + D~^-1 r
template <typename T, typename D>
__global__ void femopt_multigrid_lanczos_p(
    T* __restrict__ p, const T* __restrict__ r, const D* __restrict__ inv_diag, T beta,
    femopt_index n)
{
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count())
        p[i] = femopt_smoother_add(femopt_smoother_mul(p[i], beta),
                                   femopt_smoother_mul(femopt_inverse_diagonal(inv_diag[i]),
                                                       r[i]));
}
