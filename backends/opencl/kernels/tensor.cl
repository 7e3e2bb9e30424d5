// Data movement: general transpose / strided copy, and 2-D block copies (Concat).
#define MAXR 6

// y[i] = x[x_off + sum(idx_d * stride_d)] where idx is i unravelled over dims.
// meta: rank, dims[rank], x_strides[rank].
__kernel void strided_copy_f32(const int total, __global const int *meta,
                               __global const float *x, const long x_off, __global float *y,
                               const long y_off)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const int rank = meta[0];
    long ix = 0;
    int rem = i;
    for (int d = rank - 1; d >= 0; --d) {
        const int dim = meta[1 + d];
        ix += (long)(rem % dim) * meta[1 + rank + d];
        rem /= dim;
    }
    y[y_off + i] = x[x_off + ix];
}

// rows x cols block: y[y_off + r*ldy + c] = x[x_off + r*ldx + c]
__kernel void copy2d_f32(const int rows, const int cols, __global const float *x,
                         const long x_off, const int ldx, __global float *y, const long y_off,
                         const int ldy)
{
    const int c = get_global_id(0);
    const int r = get_global_id(1);
    if (c >= cols || r >= rows) return;
    y[y_off + (long)r * ldy + c] = x[x_off + (long)r * ldx + c];
}
