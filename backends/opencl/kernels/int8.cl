// Integer kernels shared with FPGA OpenCL platforms: int8 x int8 -> int32 accumulate,
// int32 bias, then requantize by an integer multiplier and a right shift, add the output
// zero point and saturate. The rounding rule of the shift is a build option so that it
// follows the FPGA specification (hal.backends.fpga.spec: round-half-up) by default:
//   -DHAL_REQUANT_ROUNDING=HAL_ROUND_HALF_UP               (ties toward +infinity; default)
//   -DHAL_REQUANT_ROUNDING=HAL_ROUND_HALF_AWAY_FROM_ZERO
//   -DHAL_REQUANT_ROUNDING=HAL_ROUND_HALF_EVEN             (ties to even)
#define HAL_ROUND_HALF_AWAY_FROM_ZERO 0
#define HAL_ROUND_HALF_UP 1
#define HAL_ROUND_HALF_EVEN 2
#ifndef HAL_REQUANT_ROUNDING
#define HAL_REQUANT_ROUNDING HAL_ROUND_HALF_UP
#endif

// round(acc * mult / 2^shift) under HAL_REQUANT_ROUNDING, + zp, saturated to [qmin, qmax].
// 0 <= shift <= 62; the product is exact in 64 bits.
inline int requantize(int acc, int mult, int shift, int zp, int qmin, int qmax)
{
    const long p = (long)acc * (long)mult;
    long r = p;
    if (shift > 0) {
        const long rnd = 1L << (shift - 1);
#if HAL_REQUANT_ROUNDING == HAL_ROUND_HALF_AWAY_FROM_ZERO
        r = p >= 0 ? (p + rnd) >> shift : -((-p + rnd) >> shift);
#elif HAL_REQUANT_ROUNDING == HAL_ROUND_HALF_UP
        r = (p + rnd) >> shift;
#elif HAL_REQUANT_ROUNDING == HAL_ROUND_HALF_EVEN
        const long q = p >> shift;                  // floor
        const long rem = p - (q << shift);          // 0 <= rem < 2^shift
        r = rem > rnd || (rem == rnd && (q & 1)) ? q + 1 : q;
#else
#error "unknown HAL_REQUANT_ROUNDING"
#endif
    }
    r += zp;
    return (int)(r < qmin ? qmin : r > qmax ? qmax : r);
}

// C[m, n] = sum_k A[m, k] * B[k, n] (+ bias), int32, then either stored as int32 or
// requantized to int8. A[m,k] = A[a_off + m*sam + k*sak], B[k,n] = B[b_off + k*sbk + n*sbn].
// Quantization parameters are indexed per tensor (qp_mode 0), per column n (1) or per
// row m (2); the same index selects the bias (bias_mode: 0 none, 1 per n, 2 per m).
__kernel void gemm_s8(const int M, const int N, const int K,
                      __global const char *A, const long a_off, const int sam, const int sak,
                      const long sab,
                      __global const char *B, const long b_off, const int sbk, const int sbn,
                      const long sbb,
                      __global const int *bias, const int bias_mode,
                      __global int *C32, __global char *C8, const int ldc, const long scb,
                      const int out_int32,
                      __global const int *mult, __global const int *shift, const int qp_mode,
                      const int zp, const int qmin, const int qmax)
{
    const int n = get_global_id(0);
    const int m = get_global_id(1);
    const int bt = get_global_id(2);
    if (n >= N || m >= M) return;
    __global const char *ap = A + a_off + bt * sab + (long)m * sam;
    __global const char *bp = B + b_off + bt * sbb + (long)n * sbn;
    int acc = 0;
    for (int k = 0; k < K; ++k) acc += (int)ap[(long)k * sak] * (int)bp[(long)k * sbk];
    if (bias_mode == 1) acc += bias[n];
    else if (bias_mode == 2) acc += bias[m];
    const long o = bt * scb + (long)m * ldc + n;
    if (out_int32) {
        C32[o] = acc;
    } else {
        const int q = qp_mode == 1 ? n : qp_mode == 2 ? m : 0;
        C8[o] = (char)requantize(acc, mult[q], shift[q], zp, qmin, qmax);
    }
}

// Standalone requantization of int32 values laid out as [outer, C, inner] (channel c).
__kernel void requantize_s32(const int total, const int C, const int inner,
                             __global const int *x, __global char *y,
                             __global const int *mult, __global const int *shift,
                             const int per_channel, const int zp, const int qmin, const int qmax)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const int q = per_channel ? (i / inner) % C : 0;
    y[i] = (char)requantize(x[i], mult[q], shift[q], zp, qmin, qmax);
}

// int8 im2col (see nn.cl); padding reads the input zero point.
__kernel void im2col_s8(const int C, const int H, const int W, const int KH, const int KW,
                        const int SH, const int SW, const int PH, const int PW,
                        const int DH, const int DW, const int OH, const int OW,
                        __global const char *x, const long x_off, const long sxn,
                        __global char *col, const int ldc, const long scn, const char pad)
{
    const int p = get_global_id(0);
    const int k = get_global_id(1);
    const int n = get_global_id(2);
    if (p >= OH * OW || k >= C * KH * KW) return;
    const int oh = p / OW, ow = p % OW;
    const int c = k / (KH * KW), r = k % (KH * KW);
    const int ih = oh * SH - PH + (r / KW) * DH;
    const int iw = ow * SW - PW + (r % KW) * DW;
    char v = pad;
    if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = x[x_off + n * sxn + ((long)c * H + ih) * W + iw];
    col[n * scn + (long)k * ldc + p] = v;
}
