// hal_int8_layer for FPGA OpenCL flows (Xilinx Vitis v++, Intel aoc) and, unchanged, for a CPU
// OpenCL runtime (PoCL) in CI. The same kernel as hls/hal_int8.cpp: the same arguments in the
// same order with the same meaning, the same loops, buffers, PE array and cycle estimate; the
// two outputs that are registers on the HLS IP are one-element buffers here.
// Launch as a single work-item task: global size (1,1,1).
//
// Arithmetic (bit for bit hal.backends.fpga.spec): acc = bias + sum int8*int8 in int32 (wrapping),
// y = (acc*m + 2**(s-1)) >> s in 64 bits with an arithmetic shift (round half up),
// clamp to [max(act_min,-128), min(act_max,127)], optional pool x pool / stride pool max-pool.
#include "hal_int8_params.h"  // ../hls: build with -I ../hls

#if defined(INTELFPGA_CL)
#define HAL_TASK __attribute__((max_global_work_dim(0)))
#else
#define HAL_TASK __attribute__((reqd_work_group_size(1, 1, 1)))
#endif

static long burst(long bytes) {
    return HAL_BURST_OVERHEAD + (bytes + HAL_AXI_BYTES - 1) / HAL_AXI_BYTES;
}

// Right shift with the sign filled in, written out: OpenCL C leaves >> of a negative value to
// the implementation, the spec does not.
static long shift_right(long v, int s) {
    return v >= 0 ? v >> s : ~((~v) >> s);
}

static char requantize(int acc, int m, int s, int lo, int hi) {
    long v = shift_right((long)acc * (long)m + ((long)1 << (s - 1)), s);
    if (v < lo) v = lo;  // max then min, as numpy.clip
    if (v > hi) v = hi;
    return (char)v;
}

HAL_TASK
__kernel void hal_int8_layer(__global const char *restrict x, __global const char *restrict w,
                             __global const int *restrict bias, __global const int *restrict mult,
                             __global const int *restrict shift, __global char *restrict y,
                             int op, int n, int c, int h, int wd, int o, int kh, int kw,
                             int stride, int pad, int groups, int act_min, int act_max, int pool,
                             __global int *restrict status, __global long *restrict cycles) {
    __local char xbuf[HAL_MAX_XBUF];
    __local char wbuf[HAL_PE_OUT][HAL_MAX_WK];
    __local char obuf[HAL_PE_OUT][HAL_MAX_OW];
    int bbuf[HAL_PE_OUT], mbuf[HAL_PE_OUT], sbuf[HAL_PE_OUT], cbase[HAL_PE_OUT];
    uint acc[HAL_PE_OUT];

    cycles[0] = 0;
    if (op != HAL_OP_CONV && op != HAL_OP_GEMM) {
        status[0] = HAL_ERR_OP;
        return;
    }
    if (op == HAL_OP_GEMM) {
        h = wd = kh = kw = stride = groups = 1;
        pad = pool = 0;
    }
    if (n < 1 || c < 1 || h < 1 || wd < 1 || o < 1 || kh < 1 || kw < 1 || stride < 1 ||
        pad < 0 || pool < 0 || groups < 1 || c % groups || o % groups) {
        status[0] = HAL_ERR_SHAPE;
        return;
    }
    // Sizes in 64 bits: the registers are any int32, and h + 2*pad alone can overflow 32 bits.
    const int pk = pool > 1 ? pool : 1;
    const long hp = (long)h + 2 * (long)pad, wp64 = (long)wd + 2 * (long)pad;
    const long oh64 = hp < kh ? 0 : (hp - kh) / stride + 1;
    const long ow64 = wp64 < kw ? 0 : (wp64 - kw) / stride + 1;
    if (oh64 / pk < 1 || ow64 / pk < 1) {
        status[0] = HAL_ERR_SHAPE;
        return;
    }
    const int cg = c / groups, og = o / groups;
    const int span = (HAL_PE_OUT - 1) / og + 2;
    const long cr_max = (long)cg * (span < groups ? span : groups);
    if (hp > 2147483647L || kh > HAL_MAX_WK || kw > HAL_MAX_WK || cg > HAL_MAX_WK ||
        wp64 > HAL_MAX_XBUF || (long)cg * kh * kw > HAL_MAX_K ||
        (long)cg * kh * kw > HAL_MAX_WK || ow64 / pk > HAL_MAX_OW ||
        kh * wp64 * cr_max > HAL_MAX_XBUF) {
        status[0] = HAL_ERR_LIMIT;
        return;
    }
    const int wp = (int)wp64;
    const int ph = (int)(oh64 / pk), pw = (int)(ow64 / pk);
    const int ohc = ph * pk, owc = pw * pk;
    const long kk = (long)cg * kh * kw;
    const int lo = act_min > -128 ? act_min : -128, hi = act_max < 127 ? act_max : 127;

    long cyc = 0;
    const int tiles = (o + HAL_PE_OUT - 1) / HAL_PE_OUT;
    for (int t = 0; t < tiles; ++t) {
        const int oc0 = t * HAL_PE_OUT;
        const int lanes = o - oc0 < HAL_PE_OUT ? o - oc0 : HAL_PE_OUT;
        for (int p = 0; p < HAL_PE_OUT; ++p) {
            const bool on = p < lanes;
            bbuf[p] = on ? bias[oc0 + p] : 0;
            mbuf[p] = on ? mult[oc0 + p] : 0;
            sbuf[p] = on ? shift[oc0 + p] : 1;
            if (mbuf[p] < 0 || sbuf[p] < 1 || sbuf[p] > 62) {
                status[0] = HAL_ERR_QPARAM;
                cycles[0] = cyc;
                return;
            }
        }
        cyc += 3 * burst(4 * (long)lanes);
        for (int p = 0; p < lanes; ++p)
            for (int ic = 0; ic < cg; ++ic)
                for (int ky = 0; ky < kh; ++ky)
                    for (int kx = 0; kx < kw; ++kx)
                        wbuf[p][(ky * kw + kx) * cg + ic] =
                            w[(long)(oc0 + p) * kk + ((long)ic * kh + ky) * kw + kx];
        cyc += burst((long)lanes * kk);
        const int g_lo = oc0 / og, g_hi = (oc0 + lanes - 1) / og;
        const int c_lo = g_lo * cg, cr = (g_hi - g_lo + 1) * cg;
#pragma unroll
        for (int p = 0; p < HAL_PE_OUT; ++p)
            cbase[p] = p < lanes ? ((oc0 + p) / og) * cg - c_lo : 0;
        const int slot_len = wp * cr;
        for (int b = 0; b < n; ++b) {
            int next_row = -pad;
            for (int oy = 0; oy < ohc; ++oy) {
                const int r_lo = oy * stride - pad, r_hi = r_lo + kh - 1;
                for (int r = r_lo > next_row ? r_lo : next_row; r <= r_hi; ++r) {
                    const int base = ((r + pad) % kh) * slot_len;
                    const bool inside = r >= 0 && r < h;
                    for (int ci = 0; ci < cr; ++ci)
                        for (int col = 0; col < wp; ++col) {
                            const int xc = col - pad;
                            xbuf[base + col * cr + ci] =
                                inside && xc >= 0 && xc < wd
                                    ? x[(((long)b * c + c_lo + ci) * h + r) * wd + xc]
                                    : (char)0;
                        }
                    if (!inside)
                        cyc += ((long)slot_len + HAL_AXI_BYTES - 1) / HAL_AXI_BYTES;
                    else if (h == 1)
                        cyc += burst((long)cr * wd);
                    else
                        cyc += cr * burst(wd);
                }
                next_row = r_hi + 1;
                for (int ox = 0; ox < owc; ++ox) {
#pragma unroll
                    for (int p = 0; p < HAL_PE_OUT; ++p)
                        acc[p] = (uint)bbuf[p];
                    for (int ky = 0; ky < kh; ++ky)
                        for (int kx = 0; kx < kw; ++kx)
                            for (int ic0 = 0; ic0 < cg; ic0 += HAL_PE_IN) {
                                const int px = ((oy * stride + ky) % kh) * slot_len +
                                               (ox * stride + kx) * cr;
#pragma unroll
                                for (int p = 0; p < HAL_PE_OUT; ++p) {
#pragma unroll
                                    for (int q = 0; q < HAL_PE_IN; ++q) {
                                        const int ic = ic0 + q;
                                        if (ic < cg)
                                            acc[p] += (uint)((int)xbuf[px + cbase[p] + ic] *
                                                             (int)wbuf[p][(ky * kw + kx) * cg + ic]);
                                    }
                                }
                            }
                    cyc += (long)kh * kw * ((cg + HAL_PE_IN - 1) / HAL_PE_IN);
#pragma unroll
                    for (int p = 0; p < HAL_PE_OUT; ++p) {
                        const char v = requantize((int)acc[p], mbuf[p], sbuf[p], lo, hi);
                        const int q = ox / pk;
                        obuf[p][q] = (oy % pk == 0 && ox % pk == 0) || v > obuf[p][q] ? v : obuf[p][q];
                    }
                }
                cyc += HAL_PIPE_DEPTH;
                if (oy % pk == pk - 1) {
                    const int py = oy / pk;
                    for (int p = 0; p < lanes; ++p)
                        for (int q = 0; q < pw; ++q)
                            y[(((long)b * o + oc0 + p) * ph + py) * pw + q] = obuf[p][q];
                    if (ph == 1 && pw == 1)
                        cyc += burst(lanes);
                    else
                        cyc += lanes * burst(pw);
                }
            }
        }
    }
    status[0] = 0;
    cycles[0] = cyc;
}
