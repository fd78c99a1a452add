// One trial of the optimality-criteria update with a linear constraint w . x <= limit
// (a volume fraction, filtered or not: the filter is linear), fused with the reductions
// the multiplier bisection and the convergence test need. One thread per variable:
//   ratio = max(-df / dg, FLOOR),  B = min(ratio / lmid, CEIL)^eta,
//   x_new = clip(x B, max(x - move, xmin), min(x + move, xmax)),
//   out[0] += w . x_new,  out[1] = max |x_new - x| (as the bits of a double >= 0).
// xmin, xmax and w may be null: one number for every entry then, xmin_value, xmax_value
// and w_value (a constant, which the caller keeps as one number at stride 0).

#define FEMOPT_OC_FLOOR 1e-30
#define FEMOPT_OC_CEIL 1e30

template <typename T>
__global__ void femopt_optimizers_oc_update(
    const T* __restrict__ x, const T* __restrict__ df, const T* __restrict__ dg,
    const T* __restrict__ xmin, const T* __restrict__ xmax, const T* __restrict__ w,
    T* __restrict__ x_new, double xmin_value, double xmax_value, double w_value,
    double lmid, double move, double eta, double* out, femopt_index n)
{
    double vol = 0.0, change = 0.0;
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        const double xi = (double)x[i];
        const double g = (double)dg[i];
        const double safe_g = fabs(g) > FEMOPT_OC_FLOOR ? g : FEMOPT_OC_FLOOR;
        const double ratio = fmax(-(double)df[i] / safe_g, FEMOPT_OC_FLOOR);
        const double factor = pow(fmin(ratio / lmid, FEMOPT_OC_CEIL), eta);
        const double lo = fmax(xi - move, xmin ? (double)xmin[i] : xmin_value);
        const double hi = fmin(xi + move, xmax ? (double)xmax[i] : xmax_value);
        const T xn = (T)fmin(fmax(xi * factor, lo), hi);
        x_new[i] = xn;
        const double wi = w ? (double)w[i] : w_value;
        vol += wi * (double)xn;
        change = fmax(change, fabs((double)xn - xi));
    }
    femopt_block_sum_add(vol, out);
    femopt_block_max_bits(change, (unsigned long long*)(out + 1));
}

// The volumes w . x_new(l) at FEMOPT_OC_CANDIDATES multipliers l in one pass (the next
// steps of the bisection, each a candidate): out[k] += w . x_new(l_k), where
//   x_new(l) = clip(min(b l^-eta, x CEIL^eta), max(x - move, xmin), min(x + move, xmax)),
//   b = x max(-df / dg, FLOOR)^eta,
// the trial kernel's update with (ratio / l)^eta split into its two factors (the last
// bits may differ from it: a float64 volume moves by a few ulps of itself; a float32
// design's cells, rounded to float32 as the trial rounds them, by one float32 ulp each,
// about 1e-7 of the volume at most). scales[k] = l_k^-eta;
// cap = CEIL^eta; sqrt_eta: eta is 1/2 (a square root, not pow). x_new is not written.
#define FEMOPT_OC_CANDIDATES 15

template <typename T>
__global__ void __launch_bounds__(256, 2) femopt_optimizers_oc_volumes(
    const T* __restrict__ x, const T* __restrict__ df, const T* __restrict__ dg,
    const T* __restrict__ xmin, const T* __restrict__ xmax, const T* __restrict__ w,
    double xmin_value, double xmax_value, double w_value,
    const double* __restrict__ scales, double move, double eta, int sqrt_eta, double cap,
    double* out, femopt_index n)
{
    constexpr int K = FEMOPT_OC_CANDIDATES;
    __shared__ double c[K];  // read as a broadcast: the registers hold the sums
    if (threadIdx.x < K) c[threadIdx.x] = scales[threadIdx.x];
    __syncthreads();
    double vol[K];
#pragma unroll
    for (int k = 0; k < K; ++k) vol[k] = 0.0;
    for (femopt_index i = femopt_thread_id(); i < n; i += femopt_thread_count()) {
        const double xi = (double)x[i];
        const double g = (double)dg[i];
        const double safe_g = fabs(g) > FEMOPT_OC_FLOOR ? g : FEMOPT_OC_FLOOR;
        const double ratio = fmax(-(double)df[i] / safe_g, FEMOPT_OC_FLOOR);
        const double b = xi * (sqrt_eta ? sqrt(ratio) : pow(ratio, eta));
        const double top = xi * cap;
        const double lo = fmax(xi - move, xmin ? (double)xmin[i] : xmin_value);
        const double hi = fmin(xi + move, xmax ? (double)xmax[i] : xmax_value);
        const double wi = w ? (double)w[i] : w_value;
#pragma unroll
        for (int k = 0; k < K; ++k) {
            const T xn = (T)fmin(fmax(fmin(b * c[k], top), lo), hi);
            vol[k] = fma(wi, (double)xn, vol[k]);
        }
    }
    // per candidate: the warp's sum, then the block's (shared), one atomic a block
    __shared__ double warp_vol[K][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        double v = vol[k];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) warp_vol[k][warp] = v;
    }
    __syncthreads();
    if (threadIdx.x < K) {
        double v = 0.0;
        for (int j = 0; j < (int)(blockDim.x >> 5); ++j) v += warp_vol[threadIdx.x][j];
        atomicAdd(out + threadIdx.x, v);
    }
}
