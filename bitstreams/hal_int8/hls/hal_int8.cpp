// hal_int8_layer: one int8 conv2d / gemm layer (see hal_int8.h for the arithmetic, the data
// layout and the PE array). Standard C++ integer types plus #pragma HLS only, so the same file
// is the Vitis HLS top (hls/run_hls.tcl) and, built with g++, the simulation library that
// HAL's tests check against hal.backends.fpga.spec bit for bit.
//
// `cycles` is an estimate computed from this kernel's own loop structure, not a measurement:
// every burst costs HAL_BURST_OVERHEAD + ceil(bytes / HAL_AXI_BYTES) cycles, every MAC-loop
// step one cycle (the loop is pipelined at II=1), every output row HAL_PIPE_DEPTH cycles of
// pipeline fill; loads, compute and stores are counted one after another (no overlap).
#include "hal_int8.h"

static_assert((-3 >> 1) == -2 && (int64_t(-5) >> 1) == -3,
              "the requantizer needs an arithmetic right shift of signed integers");

static int64_t burst(int64_t bytes) {
    return HAL_BURST_OVERHEAD + (bytes + HAL_AXI_BYTES - 1) / HAL_AXI_BYTES;
}

static int8_t requantize(int32_t acc, int32_t m, int32_t s, int32_t lo, int32_t hi) {
#pragma HLS INLINE
    int64_t v = ((int64_t)acc * (int64_t)m + ((int64_t)1 << (s - 1))) >> s;
    if (v < lo) v = lo;  // max then min, as numpy.clip: a register pair with lo > hi gives hi
    if (v > hi) v = hi;
    return (int8_t)v;
}

void hal_int8_layer(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                    const int32_t *shift, int8_t *y, int32_t op, int32_t n, int32_t c, int32_t h,
                    int32_t wd, int32_t o, int32_t kh, int32_t kw, int32_t stride, int32_t pad,
                    int32_t groups, int32_t act_min, int32_t act_max, int32_t pool,
                    int32_t &status, int64_t &cycles) {
// Register map: fixed offsets so the Verilog core and the drivers share one map (manifest.json).
#pragma HLS INTERFACE mode=s_axilite port=return bundle=control
#pragma HLS INTERFACE mode=m_axi port=x offset=slave bundle=gmem0 depth=4096 max_read_burst_length=256
#pragma HLS INTERFACE mode=m_axi port=w offset=slave bundle=gmem1 depth=4096 max_read_burst_length=256
#pragma HLS INTERFACE mode=m_axi port=bias offset=slave bundle=gmem2 depth=256
#pragma HLS INTERFACE mode=m_axi port=mult offset=slave bundle=gmem2 depth=256
#pragma HLS INTERFACE mode=m_axi port=shift offset=slave bundle=gmem2 depth=256
#pragma HLS INTERFACE mode=m_axi port=y offset=slave bundle=gmem3 depth=4096 max_write_burst_length=256
#pragma HLS INTERFACE mode=s_axilite port=x offset=0x10 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=w offset=0x1c bundle=control
#pragma HLS INTERFACE mode=s_axilite port=bias offset=0x28 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=mult offset=0x34 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=shift offset=0x40 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=y offset=0x4c bundle=control
#pragma HLS INTERFACE mode=s_axilite port=op offset=0x58 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=n offset=0x60 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=c offset=0x68 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=h offset=0x70 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=wd offset=0x78 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=o offset=0x80 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=kh offset=0x88 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=kw offset=0x90 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=stride offset=0x98 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=pad offset=0xa0 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=groups offset=0xa8 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=act_min offset=0xb0 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=act_max offset=0xb8 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=pool offset=0xc0 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=status offset=0xc8 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=cycles offset=0xd0 bundle=control
    cycles = 0;
    if (op != HAL_OP_CONV && op != HAL_OP_GEMM) {
        status = HAL_ERR_OP;
        return;
    }
    if (op == HAL_OP_GEMM) {  // [N,K] x [O,K]^T is a 1x1 convolution of N 1x1 images
        h = wd = kh = kw = stride = groups = 1;
        pad = pool = 0;
    }
    if (n < 1 || c < 1 || h < 1 || wd < 1 || o < 1 || kh < 1 || kw < 1 || stride < 1 ||
        pad < 0 || pool < 0 || groups < 1 || c % groups || o % groups) {
        status = HAL_ERR_SHAPE;
        return;
    }
    // Sizes in 64 bits: the registers are any int32, and h + 2*pad alone can overflow 32 bits.
    const int32_t pk = pool > 1 ? pool : 1;
    const int64_t hp = (int64_t)h + 2 * (int64_t)pad, wp64 = (int64_t)wd + 2 * (int64_t)pad;
    const int64_t oh64 = hp < kh ? 0 : (hp - kh) / stride + 1;
    const int64_t ow64 = wp64 < kw ? 0 : (wp64 - kw) / stride + 1;
    if (oh64 / pk < 1 || ow64 / pk < 1) {
        status = HAL_ERR_SHAPE;  // the (pooled) output would be empty
        return;
    }
    const int32_t cg = c / groups, og = o / groups;
    const int32_t span = (HAL_PE_OUT - 1) / og + 2;  // groups one lane tile can touch
    const int64_t cr_max = (int64_t)cg * (span < groups ? span : groups);
    // Every factor is bounded before it enters a product, so none of these overflows.
    if (hp > 2147483647 || kh > HAL_MAX_WK || kw > HAL_MAX_WK || cg > HAL_MAX_WK ||
        wp64 > HAL_MAX_XBUF || (int64_t)cg * kh * kw > HAL_MAX_K ||
        (int64_t)cg * kh * kw > HAL_MAX_WK || ow64 / pk > HAL_MAX_OW ||
        kh * wp64 * cr_max > HAL_MAX_XBUF) {
        status = HAL_ERR_LIMIT;
        return;
    }
    const int32_t wp = (int32_t)wp64;
    const int32_t ph = (int32_t)(oh64 / pk), pw = (int32_t)(ow64 / pk);  // pooled output
    const int32_t ohc = ph * pk, owc = pw * pk;  // conv rows/cols that reach the output
    const int64_t kk = (int64_t)cg * kh * kw;
    const int32_t lo = act_min > -128 ? act_min : -128, hi = act_max < 127 ? act_max : 127;

    int8_t xbuf[HAL_MAX_XBUF];  // ring of kh rows, each [wp][channels of the tile], channel-last
#pragma HLS ARRAY_PARTITION variable=xbuf type=cyclic factor=HAL_PE_IN
    int8_t wbuf[HAL_PE_OUT][HAL_MAX_WK];  // per lane, ordered [ky][kx][ic]
#pragma HLS ARRAY_PARTITION variable=wbuf type=complete dim=1
#pragma HLS ARRAY_PARTITION variable=wbuf type=cyclic factor=HAL_PE_IN dim=2
    int8_t obuf[HAL_PE_OUT][HAL_MAX_OW];  // one pooled output row per lane (running max)
#pragma HLS ARRAY_PARTITION variable=obuf type=complete dim=1
    int32_t bbuf[HAL_PE_OUT], mbuf[HAL_PE_OUT], sbuf[HAL_PE_OUT], cbase[HAL_PE_OUT];
#pragma HLS ARRAY_PARTITION variable=bbuf type=complete
#pragma HLS ARRAY_PARTITION variable=mbuf type=complete
#pragma HLS ARRAY_PARTITION variable=sbuf type=complete
#pragma HLS ARRAY_PARTITION variable=cbase type=complete
    uint32_t acc[HAL_PE_OUT];  // int32 accumulators; unsigned so overflow wraps as in hardware
#pragma HLS ARRAY_PARTITION variable=acc type=complete

    int64_t cyc = 0;
    const int32_t tiles = (o + HAL_PE_OUT - 1) / HAL_PE_OUT;
TILES:
    for (int32_t t = 0; t < tiles; ++t) {
        const int32_t oc0 = t * HAL_PE_OUT;
        const int32_t lanes = o - oc0 < HAL_PE_OUT ? o - oc0 : HAL_PE_OUT;
    LOAD_Q:
        for (int32_t p = 0; p < HAL_PE_OUT; ++p) {
            const bool on = p < lanes;
            bbuf[p] = on ? bias[oc0 + p] : 0;
            mbuf[p] = on ? mult[oc0 + p] : 0;
            sbuf[p] = on ? shift[oc0 + p] : 1;
            if (mbuf[p] < 0 || sbuf[p] < 1 || sbuf[p] > 62) {
                status = HAL_ERR_QPARAM;
                cycles = cyc;
                return;
            }
        }
        cyc += 3 * burst(4 * (int64_t)lanes);
    LOAD_W:  // lanes' weights are one contiguous OIHW block: one burst, reordered to [ky][kx][ic]
        for (int32_t p = 0; p < lanes; ++p)
            for (int32_t ic = 0; ic < cg; ++ic)
                for (int32_t ky = 0; ky < kh; ++ky)
                    for (int32_t kx = 0; kx < kw; ++kx) {
#pragma HLS PIPELINE II=1
                        wbuf[p][(ky * kw + kx) * cg + ic] =
                            w[(int64_t)(oc0 + p) * kk + ((int64_t)ic * kh + ky) * kw + kx];
                    }
        cyc += burst((int64_t)lanes * kk);
        const int32_t g_lo = oc0 / og, g_hi = (oc0 + lanes - 1) / og;
        const int32_t c_lo = g_lo * cg, cr = (g_hi - g_lo + 1) * cg;
        for (int32_t p = 0; p < HAL_PE_OUT; ++p) {
#pragma HLS UNROLL
            cbase[p] = p < lanes ? ((oc0 + p) / og) * cg - c_lo : 0;
        }
        const int32_t slot_len = wp * cr;
    IMAGES:
        for (int32_t b = 0; b < n; ++b) {
            int32_t next_row = -pad;  // lowest input row not yet in the ring
        ROWS:
            for (int32_t oy = 0; oy < ohc; ++oy) {
                const int32_t r_lo = oy * stride - pad, r_hi = r_lo + kh - 1;
            LOAD_X:
                for (int32_t r = r_lo > next_row ? r_lo : next_row; r <= r_hi; ++r) {
                    const int32_t base = ((r + pad) % kh) * slot_len;  // index, not pointer
                    const bool inside = r >= 0 && r < h;
                    for (int32_t ci = 0; ci < cr; ++ci)
                        for (int32_t col = 0; col < wp; ++col) {
#pragma HLS PIPELINE II=1
                            const int32_t xc = col - pad;
                            xbuf[base + col * cr + ci] =
                                inside && xc >= 0 && xc < wd
                                    ? x[(((int64_t)b * c + c_lo + ci) * h + r) * wd + xc]
                                    : (int8_t)0;
                        }
                    if (!inside)
                        cyc += ((int64_t)slot_len + HAL_AXI_BYTES - 1) / HAL_AXI_BYTES;
                    else if (h == 1)  // one row per channel: the channels are contiguous
                        cyc += burst((int64_t)cr * wd);
                    else
                        cyc += cr * burst(wd);
                }
                next_row = r_hi + 1;
            COLS:
                for (int32_t ox = 0; ox < owc; ++ox) {
                    for (int32_t p = 0; p < HAL_PE_OUT; ++p) {
#pragma HLS UNROLL
                        acc[p] = (uint32_t)bbuf[p];
                    }
                MAC:
                    for (int32_t ky = 0; ky < kh; ++ky)
                        for (int32_t kx = 0; kx < kw; ++kx)
                            for (int32_t ic0 = 0; ic0 < cg; ic0 += HAL_PE_IN) {
#pragma HLS PIPELINE II=1
                                const int32_t px = ((oy * stride + ky) % kh) * slot_len +
                                                   (ox * stride + kx) * cr;
                                for (int32_t p = 0; p < HAL_PE_OUT; ++p) {
#pragma HLS UNROLL
                                    for (int32_t q = 0; q < HAL_PE_IN; ++q) {
#pragma HLS UNROLL
                                        const int32_t ic = ic0 + q;
                                        if (ic < cg)
                                            acc[p] += (uint32_t)(
                                                (int32_t)xbuf[px + cbase[p] + ic] *
                                                (int32_t)wbuf[p][(ky * kw + kx) * cg + ic]);
                                    }
                                }
                            }
                    cyc += (int64_t)kh * kw * ((cg + HAL_PE_IN - 1) / HAL_PE_IN);
                POOL:
                    for (int32_t p = 0; p < HAL_PE_OUT; ++p) {
#pragma HLS UNROLL
                        const int8_t v = requantize((int32_t)acc[p], mbuf[p], sbuf[p], lo, hi);
                        int8_t &cell = obuf[p][ox / pk];
                        cell = (oy % pk == 0 && ox % pk == 0) || v > cell ? v : cell;
                    }
                }
                cyc += HAL_PIPE_DEPTH;
                if (oy % pk == pk - 1) {
                    const int32_t py = oy / pk;
                STORE:
                    for (int32_t p = 0; p < lanes; ++p)
                        for (int32_t q = 0; q < pw; ++q) {
#pragma HLS PIPELINE II=1
                            y[(((int64_t)b * o + oc0 + p) * ph + py) * pw + q] = obuf[p][q];
                        }
                    if (ph == 1 && pw == 1)  // one value per channel: the lanes are contiguous
                        cyc += burst(lanes);
                    else
                        cyc += lanes * burst(pw);
                }
            }
        }
    }
    status = 0;
    cycles = cyc;
}

#ifndef __SYNTHESIS__
extern "C" int32_t hal_int8_sim_layer(const int8_t *x, const int8_t *w, const int32_t *bias,
                                      const int32_t *mult, const int32_t *shift, int8_t *y,
                                      int32_t op, int32_t n, int32_t c, int32_t h, int32_t wd,
                                      int32_t o, int32_t kh, int32_t kw, int32_t stride,
                                      int32_t pad, int32_t groups, int32_t act_min,
                                      int32_t act_max, int32_t pool, int64_t *cycles) {
    int32_t status = 0;
    int64_t cyc = 0;
    hal_int8_layer(x, w, bias, mult, shift, y, op, n, c, h, wd, o, kh, kw, stride, pad, groups,
                   act_min, act_max, pool, status, cyc);
    if (cycles) *cycles = cyc;
    return status;
}

extern "C" void hal_int8_sim_config(int64_t *out) {
    const int64_t v[9] = {HAL_PE_OUT,     HAL_PE_IN,    HAL_AXI_BYTES, HAL_BURST_OVERHEAD,
                          HAL_PIPE_DEPTH, HAL_MAX_XBUF, HAL_MAX_WK,    HAL_MAX_OW, HAL_MAX_K};
    for (int i = 0; i < 9; ++i) out[i] = v[i];
}
#endif
