// Elementwise kernels: unary activations/math and binary ops with numpy broadcasting.
#include "activation.h"

#define MAXR 6

// Unary math beyond the activations: the U_* codes (and the B_* codes of the binary ops
// below) come as -D defines from hal.backends.opencl.codes, like the ACT_* ones.

inline float unary(float x, int op, float p0, float p1)
{
    switch (op) {
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_SQRT: return sqrt(x);
    case U_NEG: return -x;
    case U_ABS: return fabs(x);
    case U_RECIPROCAL: return 1.0f / x;
    case U_ERF: return erf(x);
    default: return activate(x, op, p0, p1);
    }
}

__kernel void unary_f32(const int total, const int op, const float p0, const float p1,
                        __global const float *x, const long x_off, __global float *y)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const float v = x[x_off + i];
    y[i] = op == ACT_RELU ? (v > 0.0f ? v : 0.0f) : unary(v, op, p0, p1);
}

inline float binary(float a, float b, int op)
{
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_POW: return pow(a, b);
    case B_MAX: return isnan(a) || isnan(b) ? NAN : (a > b ? a : b);
    case B_MIN: return isnan(a) || isnan(b) ? NAN : (a < b ? a : b);
    default: return 0.0f;
    }
}

// meta: rank, then dims[rank], a_strides[rank], b_strides[rank] (elements; 0 = broadcast).
__kernel void binary_f32(const int total, const int op, __global const int *meta,
                         __global const float *a, const long a_off,
                         __global const float *b, const long b_off,
                         __global float *y, const int act, const float p0, const float p1)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const int rank = meta[0];
    long ia = 0, ib = 0;
    int rem = i;
    for (int d = rank - 1; d >= 0; --d) {
        const int dim = meta[1 + d];
        const int idx = rem % dim;
        rem /= dim;
        ia += (long)idx * meta[1 + rank + d];
        ib += (long)idx * meta[1 + 2 * rank + d];
    }
    y[i] = activate(binary(a[a_off + ia], b[b_off + ib], op), act, p0, p1);
}

// Same-shape fast path (no index arithmetic).
__kernel void binary_same_f32(const int total, const int op,
                              __global const float *a, const long a_off,
                              __global const float *b, const long b_off,
                              __global float *y, const int act, const float p0, const float p1)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const float v = op == B_ADD ? a[a_off + i] + b[b_off + i] : binary(a[a_off + i], b[b_off + i], op);
    y[i] = act == ACT_RELU ? (v > 0.0f ? v : 0.0f) : activate(v, act, p0, p1);
}
