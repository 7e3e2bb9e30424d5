// fp32 GEMM for CPU-like and GPU OpenCL devices: C = act(A @ B + bias).
//
// Each work-item computes an MR x NR tile of C held in registers as float8
// vectors (NR is a multiple of 8), streaming one float8 row of B and MR
// broadcast scalars of A per k step: the register-blocked micro-kernel of
// BLAS libraries. Work-items of one work-group share a panel of B (same
// column block, neighbouring row blocks), which keeps that panel in cache.
//
// Layouts (element strides, so one kernel serves Gemm, batched MatMul and
// im2col convolution):
//   A[m, k]  = A[a_off + b*sab + m*sam + k*sak]                 (any strides)
//   B[k, n]  = B[b_off + b*sbb + (n/NR)*sbp + k*sbk + n%NR]      (unit stride in a panel)
//   C[m, n]  = C[c_off + b*scb + m*ldc + n]
// B rows must be readable up to the next multiple of NR (HAL allocates every
// buffer with slack); columns past N are computed but never stored.

#ifndef MR
#define MR 6
#endif
#ifndef NR
#define NR 16
#endif
#ifndef KC
#define KC (1 << 30)
#define KC_BARRIER 0
#else
#define KC_BARRIER 1
#endif
#define NV (NR / 8)

// float8 with 4-byte alignment: unaligned vector loads without the vload8 call
typedef float float8u __attribute__((ext_vector_type(8), aligned(4)));

#include "activation.h"

__kernel void gemm_f32(const int M, const int N, const int K,
                       __global const float *A, const long a_off, const int sam, const int sak,
                       const long sab,
                       __global const float *B, const long b_off, const long sbp, const int sbk,
                       const long sbb,
                       __global float *C, const long c_off, const int ldc, const long scb,
                       __global const float *bias, const int has_bias, const int bsm,
                       const int bsn, const float alpha, const float beta,
                       const int act, const float p0, const float p1)
{
    const int pn = get_global_id(0);
    const int m0 = get_global_id(1) * MR;
    const int bt = get_global_id(2);
    const int n0 = pn * NR;
    // Work-items past the edge compute on clamped indices and store nothing,
    // so that every work-item reaches the barriers.
    const int npan = (N + NR - 1) / NR;
    const int pr = pn < npan ? pn : npan - 1;

    __global const float *Ab = A + a_off + bt * sab;
    __global const float *Bp = B + b_off + bt * sbb + pr * sbp;

    __global const float *ar[MR];
    _Pragma("unroll") for (int i = 0; i < MR; ++i)
        ar[i] = Ab + (m0 + i < M ? m0 + i : M - 1) * sam;

    float8 acc[MR][NV];
    _Pragma("unroll") for (int i = 0; i < MR; ++i)
        _Pragma("unroll") for (int v = 0; v < NV; ++v) acc[i][v] = (float8)(0.0f);

    // K is walked in blocks of KC; the barrier makes the work-group finish a
    // block before the next, so its blocks of A and B stay in cache.
    for (int kb = 0; kb < K; kb += KC) {
        const int ke = kb + KC < K ? kb + KC : K;
        for (int k = kb; k < ke; ++k) {
            float8 bv[NV];
            _Pragma("unroll") for (int v = 0; v < NV; ++v) bv[v] = ((__global const float8u *)Bp)[v];
            Bp += sbk;
            _Pragma("unroll") for (int i = 0; i < MR; ++i) {
                const float8 a = (float8)(ar[i][0]);
                ar[i] += sak;
                _Pragma("unroll") for (int v = 0; v < NV; ++v) acc[i][v] += a * bv[v];
            }
        }
#if KC_BARRIER
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
    }
    if (m0 >= M || n0 >= N) return;

    __global float *Cb = C + c_off + bt * scb;
    _Pragma("unroll") for (int i = 0; i < MR; ++i) {
        const int m = m0 + i;
        if (m >= M) break;
        __global float *cr = Cb + m * ldc + n0;
        // bias element [m, n] at bias[m*bsm + n*bsn]: strides 0 broadcast it
        __global const float *br = bias + m * bsm + n0 * bsn;
        _Pragma("unroll") for (int v = 0; v < NV; ++v) {
            const int left = N - n0 - v * 8;
            float8 r = acc[i][v] * alpha;
            if (left >= 8 && (act == ACT_NONE || act == ACT_RELU || act == ACT_CLIP)) {
                // full vector, cheap activation: stays in vector registers (no builtin calls)
                if (has_bias)
                    r += beta * (bsn ? *((__global const float8u *)(br + v * 8)) : (float8)(br[0]));
                if (act == ACT_RELU) r = r > (float8)(0.0f) ? r : (float8)(0.0f);
                else if (act == ACT_CLIP)
                {   // ONNX: min(max(r, lo), hi)
                    r = r < (float8)(p0) ? (float8)(p0) : r;
                    r = r > (float8)(p1) ? (float8)(p1) : r;
                }
                *((__global float8u *)(cr + v * 8)) = r;
            } else {
                float t[8];
                *((float8u *)t) = r;
                const int w = left < 8 ? left : 8;
                for (int j = 0; j < w; ++j) {
                    float e = t[j];
                    if (has_bias) e += beta * br[(v * 8 + j) * bsn];
                    cr[v * 8 + j] = activate(e, act, p0, p1);
                }
            }
        }
    }
}

// Packs X (element [k, n] at x_off + b*sxb + k*sxk + n*sxn) into GEMM panels
// P[b][n/NR][k][NR], zero-padding columns past N.
__kernel void pack_panels_f32(const int K, const int N, __global const float *X, const long x_off,
                              const int sxk, const int sxn, const long sxb,
                              __global float *P, const long spb)
{
    const int k = get_global_id(0);
    const int pn = get_global_id(1);
    const int bt = get_global_id(2);
    if (k >= K) return;
    __global const float *xr = X + x_off + bt * sxb + (long)k * sxk;
    __global float *pr = P + bt * spb + ((long)pn * K + k) * NR;
    for (int j = 0; j < NR; ++j) {
        const int n = pn * NR + j;
        pr[j] = n < N ? xr[(long)n * sxn] : 0.0f;
    }
}
