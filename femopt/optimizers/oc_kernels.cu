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
