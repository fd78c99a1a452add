// Fused vector updates and reductions of preconditioned CG. Reductions are grid-stride
// loops whose blocks each add one float64 partial sum into out[] (zeroed by the caller).

// out[0] += a . b
template <typename T>
__global__ void femopt_cg_dot(const T* __restrict__ a, const T* __restrict__ b,
                              double* out, femopt_index n)
{
    double s = 0.0;
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count())
        s += (double)a[i] * (double)b[i];
    femopt_block_sum_add(s, out);
}

// x += alpha p; r -= alpha q; out[0] += r . r. X is T, or double for a float CG that
// adds its steps straight into a float64 state (the same alpha as r's, widened)
template <typename X, typename T>
__global__ void femopt_cg_update_xr(X* __restrict__ x, T* __restrict__ r,
                                    const T* __restrict__ p, const T* __restrict__ q,
                                    T alpha, double* out, femopt_index n)
{
    double s = 0.0;
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        x[i] += (X)alpha * (X)p[i];
        const T ri = r[i] - alpha * q[i];
        r[i] = ri;
        s += (double)ri * (double)ri;
    }
    femopt_block_sum_add(s, out);
}

// out[0] += r . z; out[1] += z . q
template <typename T>
__global__ void femopt_cg_dots(const T* __restrict__ r, const T* __restrict__ z,
                               const T* __restrict__ q, double* out, femopt_index n)
{
    double s0 = 0.0, s1 = 0.0;
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        const double zi = (double)z[i];
        s0 += zi * (double)r[i];
        s1 += zi * (double)q[i];
    }
    femopt_block_sum_add(s0, out);
    femopt_block_sum_add(s1, out + 1);
}

// p = z + beta p
template <typename T>
__global__ void femopt_cg_update_p(T* __restrict__ p, const T* __restrict__ z, T beta,
                                   femopt_index n)
{
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count())
        p[i] = z[i] + beta * p[i];
}
