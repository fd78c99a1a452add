// CSR assembly of structured grids with slots computed where they are added, and the
// CSR matrix-vector product of coarse multigrid levels.

// data[slot(t)] += values[t] for every entry t = (cell, a, i, b, j) of the cell matrices
// (cells, nd, nd) of a chunk of cell layers (the grid's cells first_cell, first_cell + 1,
// ...; the whole grid from 0), nd = n_corners * k, local dof a * k + i; an entry that
// touches a constrained dof is dropped. The slot is arithmetic (structured_csr.py): row
// (i, node a) starts at indptr[row]; its block of component j is j * width further,
// width the neighbours of node a; offset b - a is preceded there by ``before`` of them,
// axes x fastest. A 2D grid passes one node and one cell along z (corners' z = 0).
template <typename T, typename I>
__global__ void femopt_assembly_csr_scatter_grid(
    const T* __restrict__ values, const bool* __restrict__ fixed,
    const I* __restrict__ indptr, const int* __restrict__ corners, T* data, int k,
    int n_corners, long long cells_x, long long cells_y, long long nodes_x,
    long long nodes_y, long long nodes_z, long long first_cell, femopt_index n)
{
    const int nd = n_corners * k;
    const femopt_index per_cell = (femopt_index)nd * nd;
    const long long nn = nodes_x * nodes_y * nodes_z;
    const long long nodes[3] = {nodes_x, nodes_y, nodes_z};
    for (femopt_index t = femopt_thread_id(); t < n; t += femopt_thread_count()) {
        const femopt_index local = t / per_cell;  // the cell in this chunk of layers
        const femopt_index e = first_cell + local;
        const int r = (int)(t - local * per_cell);
        const int la = r / nd, lb = r - (r / nd) * nd;
        const int a = la / k, i = la - a * k, b = lb / k, j = lb - b * k;
        const long long cell[3] = {e % cells_x, (e / cells_x) % cells_y,
                                   e / (cells_x * cells_y)};
        long long node = 0, shift = 0, stride = 1, width = 1, before = 0;
        for (int ax = 0; ax < 3; ++ax) {
            const long long c = cell[ax] + corners[3 * a + ax];
            const int rel = corners[3 * b + ax] - corners[3 * a + ax];
            const long long lo = c >= 1, hi = c <= nodes[ax] - 2;
            node += c * stride;
            shift += rel * stride;
            before += (lo * (rel >= 0) + (rel >= 1)) * width;
            width *= 1 + lo + hi;
            stride *= nodes[ax];
        }
        const long long row = i * nn + node;
        if (fixed[row] || fixed[j * nn + node + shift]) continue;
        atomicAdd(data + (long long)indptr[row] + j * width + before, values[t]);
    }
}

// The same with the entries of a uniform element matrix: values[t] = scale[cell[t]] *
// ke[local[t]] (the kept entries of FixedPatternAssembler).
template <typename T, typename I>
__global__ void femopt_assembly_csr_scatter_scaled(
    const T* __restrict__ scale, const T* __restrict__ ke, const I* __restrict__ cell,
    const int* __restrict__ local, const I* __restrict__ scatter, T* data, femopt_index n)
{
    for (femopt_index t = femopt_thread_id(); t < n; t += femopt_thread_count())
        atomicAdd(data + scatter[t], scale[cell[t]] * ke[local[t]]);
}

// y = alpha A u + beta z (z may alias y), 8 lanes per row.
template <typename T, typename I>
__global__ void femopt_assembly_csr_spmv(
    const I* __restrict__ indptr, const I* __restrict__ indices, const T* __restrict__ data,
    const T* __restrict__ u, const T* z, T* y, T alpha, T beta, femopt_index n_rows)
{
    const femopt_index tid = femopt_thread_id();
    const femopt_index row = tid >> 3;
    const int lane = (int)(tid & 7);
    T sum = T(0);
    if (row < n_rows) {
        const I end = indptr[row + 1];
        for (I k = indptr[row] + lane; k < end; k += 8) sum += data[k] * u[indices[k]];
    }
    // the 8 lanes of a row are consecutive in one warp
    for (int off = 4; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off, 8);
    if (row < n_rows && lane == 0)
        y[row] = beta != T(0) ? alpha * sum + beta * z[row] : alpha * sum;
}

// The same product with the columns of StructuredCSR's pattern computed, not read: row
// (i, node) has, x fastest, n_x n_y n_z neighbour nodes (n = 1 + lo + hi on each axis)
// and k blocks of them, so its entry t is, in mixed radix, t = ((j n_z + rz) n_y + ry)
// n_x + rx, column j nn + node + sum (r - lo) stride. Lane l takes entries l, l + 8,
// ... as femopt_assembly_csr_spmv does, stepping its digits by 8 with carries, and the
// lanes are added by the same shuffles: y is that kernel's bit for bit. A 2D grid
// passes one node along z.
template <typename T, typename I>
__global__ void femopt_assembly_csr_spmv_grid(
    const I* __restrict__ indptr, const T* __restrict__ data, const T* __restrict__ u,
    const T* z, T* y, T alpha, T beta, int k, I nodes_x, I nodes_y, I nodes_z,
    femopt_index n_rows)
{
    const femopt_index tid = femopt_thread_id();
    const femopt_index row = tid >> 3;
    const int lane = (int)(tid & 7);
    T sum = T(0);
    if (row < n_rows) {
        const I layer = nodes_x * nodes_y;
        const I nn = layer * nodes_z;
        const I node = (I)(row % nn);
        const I at_x = node % nodes_x, at_y = (node / nodes_x) % nodes_y;
        const I at_z = node / layer;
        const int lo_x = at_x >= 1, lo_y = at_y >= 1, lo_z = at_z >= 1;
        const int n_x = 1 + lo_x + (at_x <= nodes_x - 2);
        const int n_y = 1 + lo_y + (at_y <= nodes_y - 2);
        const int n_z = 1 + lo_z + (at_z <= nodes_z - 2);
        const I first = node - lo_x - lo_y * nodes_x - lo_z * layer;
        int rx = lane, ry = 0, rz = 0, j = 0;
        femopt_index p = (femopt_index)indptr[row] + lane;
        for (;;) {
            while (rx >= n_x) { rx -= n_x; ++ry; }
            while (ry >= n_y) { ry -= n_y; ++rz; }
            while (rz >= n_z) { rz -= n_z; ++j; }
            if (j >= k) break;
            sum += data[p] * u[first + j * nn + rx + ry * nodes_x + rz * layer];
            p += 8;
            rx += 8;
        }
    }
    // the 8 lanes of a row are consecutive in one warp
    for (int off = 4; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off, 8);
    if (row < n_rows && lane == 0)
        y[row] = beta != T(0) ? alpha * sum + beta * z[row] : alpha * sum;
}
