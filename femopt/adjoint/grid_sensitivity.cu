// Design sensitivity on a structured grid, one pass over cells (one thread per cell):
//   sens[e] = coef * dm[e] * lam_e^T K0 u_e,   *out += sum_e scale[e] * lam_e^T K0 u_e.
// With lam = u (SAME = true, compliance: lambda = -u) the sum is the compliance u^T K u
// and coef = -1 gives dc/drho. Vectors in the grid layout (c * n_nodes + node).

#define FEMOPT_SENS_MAX_ND 24
__constant__ double femopt_sens_ke_f64[FEMOPT_SENS_MAX_ND * FEMOPT_SENS_MAX_ND];
__constant__ float femopt_sens_ke_f32[FEMOPT_SENS_MAX_ND * FEMOPT_SENS_MAX_ND];

template <typename T> struct femopt_sens_ke;
template <> struct femopt_sens_ke<double> {
    static __device__ __forceinline__ const double* get() { return femopt_sens_ke_f64; }
};
template <> struct femopt_sens_ke<float> {
    static __device__ __forceinline__ const float* get() { return femopt_sens_ke_f32; }
};

template <typename T, int DIM, int K, bool SAME>
__global__ void femopt_adjoint_grid_sensitivity(
    const T* __restrict__ lam, const T* __restrict__ u, const T* __restrict__ scale,
    const T* __restrict__ dm, T coef, T* __restrict__ sens, double* out,
    int nx, int ny, int nz)
{
    constexpr int NC = 1 << DIM;
    constexpr int ND = NC * K;
    const femopt_index nnx = nx + 1, nny = ny + 1;
    const femopt_index n_nodes = nnx * nny * (DIM == 3 ? nz + 1 : 1);
    const femopt_index n_cells = (femopt_index)nx * ny * (DIM == 3 ? nz : 1);
    const T* ke = femopt_sens_ke<T>::get();
    double total = 0.0;
    for (femopt_index e = femopt_thread_id(); e < n_cells; e += femopt_thread_count()) {
        const int ex = (int)(e % nx);
        const int ey = (int)((e / nx) % ny);
        const int ez = (int)(e / ((femopt_index)nx * ny));
        const femopt_index base = ex + nnx * (ey + nny * ez);
        T ue[ND], le[ND];
#pragma unroll
        for (int b = 0; b < NC; ++b) {
            const int bx = (((b & 3) + 1) >> 1) & 1, by = ((b & 3) >> 1) & 1, bz = b >> 2;
            const femopt_index nb = base + bx + nnx * (by + nny * bz);
#pragma unroll
            for (int c = 0; c < K; ++c) {
                ue[b * K + c] = u[c * n_nodes + nb];
                le[b * K + c] = SAME ? ue[b * K + c] : lam[c * n_nodes + nb];
            }
        }
        T q = T(0);
#pragma unroll
        for (int i = 0; i < ND; ++i) {
            T row = T(0);
#pragma unroll
            for (int j = 0; j < ND; ++j) row += ke[i * ND + j] * ue[j];
            q += le[i] * row;
        }
        sens[e] = coef * dm[e] * q;
        total += (double)scale[e] * (double)q;
    }
    femopt_block_sum_add(total, out);
}

// The adjoint sensitivity of a function over several load cases, one pass over cells:
//   lam_c = beta[c] u_c + sum_k A[c, k] mu_k   (the adjoint state of case c),
//   sens[e] = coef * dm[e] * sum_c lam_c,e^T K0 u_c,e,
//   *out += sum_e scale[e] * sum_c lam_c,e^T K0 u_c,e.
// u: (n_cases, n_dofs) states; mu: (n_mu, n_dofs) adjoint solutions of K mu_k = -a_k
// (null when n_mu = 0); coefs (device, double): beta (n_cases) then A (n_cases x n_mu,
// row-major). A self-adjoint term (compliance: lambda_c = -w_c u_c) rides on beta and
// needs no vector of its own; a displacement summed over the cases, K lambda_c = -s_c a,
// is one mu with A[c, 0] = s_c. Vectors in the grid layout (c * n_nodes + node).
template <typename T, int DIM, int K>
__global__ void femopt_adjoint_grid_sensitivity_cases(
    const T* __restrict__ u, const T* __restrict__ mu, const double* __restrict__ coefs,
    int n_cases, int n_mu, const T* __restrict__ scale, const T* __restrict__ dm, T coef,
    T* __restrict__ sens, double* out, int nx, int ny, int nz)
{
    constexpr int NC = 1 << DIM;
    constexpr int ND = NC * K;
    const femopt_index nnx = nx + 1, nny = ny + 1;
    const femopt_index n_nodes = nnx * nny * (DIM == 3 ? nz + 1 : 1);
    const femopt_index n_dofs = n_nodes * K;
    const femopt_index n_cells = (femopt_index)nx * ny * (DIM == 3 ? nz : 1);
    const T* ke = femopt_sens_ke<T>::get();
    double total = 0.0;
    for (femopt_index e = femopt_thread_id(); e < n_cells; e += femopt_thread_count()) {
        const int ex = (int)(e % nx);
        const int ey = (int)((e / nx) % ny);
        const int ez = (int)(e / ((femopt_index)nx * ny));
        const femopt_index base = ex + nnx * (ey + nny * ez);
        T q = T(0);
        for (int c = 0; c < n_cases; ++c) {
            const T* uc = u + c * n_dofs;
            const T beta = (T)coefs[c];
            T ue[ND], le[ND];
#pragma unroll
            for (int b = 0; b < NC; ++b) {
                const int bx = (((b & 3) + 1) >> 1) & 1, by = ((b & 3) >> 1) & 1, bz = b >> 2;
                const femopt_index nb = base + bx + nnx * (by + nny * bz);
#pragma unroll
                for (int i = 0; i < K; ++i) {
                    ue[b * K + i] = uc[i * n_nodes + nb];
                    le[b * K + i] = beta * ue[b * K + i];
                }
            }
            for (int k = 0; k < n_mu; ++k) {
                const T a = (T)coefs[n_cases + c * n_mu + k];
                if (a == T(0)) continue;
                const T* mk = mu + k * n_dofs;
#pragma unroll
                for (int b = 0; b < NC; ++b) {
                    const int bx = (((b & 3) + 1) >> 1) & 1, by = ((b & 3) >> 1) & 1,
                              bz = b >> 2;
                    const femopt_index nb = base + bx + nnx * (by + nny * bz);
#pragma unroll
                    for (int i = 0; i < K; ++i) le[b * K + i] += a * mk[i * n_nodes + nb];
                }
            }
#pragma unroll
            for (int i = 0; i < ND; ++i) {
                T row = T(0);
#pragma unroll
                for (int j = 0; j < ND; ++j) row += ke[i * ND + j] * ue[j];
                q += le[i] * row;
            }
        }
        sens[e] = coef * dm[e] * q;
        total += (double)scale[e] * (double)q;
    }
    femopt_block_sum_add(total, out);
}
