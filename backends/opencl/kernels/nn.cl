// Convolution helpers, pooling, normalization and softmax (fp32, NCHW).
#include "activation.h"

// col[n][k][p] (row pitch ldc, batch stride scn) from x[n][c][h][w] for one group:
// k = (c, kh, kw), p = (oh, ow). One work-item per (k, n) row: no divisions per element.
__kernel void im2col_f32(const int C, const int H, const int W, const int KH, const int KW,
                         const int SH, const int SW, const int PH, const int PW,
                         const int DH, const int DW, const int OH, const int OW,
                         __global const float *x, const long x_off, const long sxn,
                         __global float *col, const int ldc, const long scn)
{
    const int k = get_global_id(0);
    const int n = get_global_id(1);
    if (k >= C * KH * KW) return;
    const int c = k / (KH * KW), r = k % (KH * KW);
    const int kh = r / KW, kw = r % KW;
    __global const float *xp = x + x_off + n * sxn + (long)c * H * W;
    __global float *cp = col + n * scn + (long)k * ldc;
    for (int oh = 0; oh < OH; ++oh) {
        const int ih = oh * SH - PH + kh * DH;
        __global float *row = cp + oh * OW;
        if (ih < 0 || ih >= H) {
            for (int ow = 0; ow < OW; ++ow) row[ow] = 0.0f;
            continue;
        }
        __global const float *xr = xp + ih * W;
        int iw = kw * DW - PW;
        for (int ow = 0; ow < OW; ++ow, iw += SW) row[ow] = iw >= 0 && iw < W ? xr[iw] : 0.0f;
    }
}

// Depthwise (and channel-multiplier) convolution: output channel co reads input co / MULT.
__kernel void depthwise_conv_f32(const int C, const int H, const int W, const int CO,
                                 const int KH, const int KW, const int SH, const int SW,
                                 const int PH, const int PW, const int DH, const int DW,
                                 const int OH, const int OW, const int MULT,
                                 __global const float *x, const long x_off,
                                 __global const float *w, __global const float *bias,
                                 const int has_bias, __global float *y,
                                 const int act, const float p0, const float p1)
{
    const int ow = get_global_id(0);
    const int oh = get_global_id(1);
    const int nc = get_global_id(2);
    if (ow >= OW || oh >= OH) return;
    const int n = nc / CO, co = nc % CO, c = co / MULT;
    __global const float *xp = x + x_off + ((long)n * C + c) * H * W;
    __global const float *wp = w + (long)co * KH * KW;
    float acc = has_bias ? bias[co] : 0.0f;
    for (int i = 0; i < KH; ++i) {
        const int ih = oh * SH - PH + i * DH;
        if (ih < 0 || ih >= H) continue;
        for (int j = 0; j < KW; ++j) {
            const int iw = ow * SW - PW + j * DW;
            if (iw >= 0 && iw < W) acc += xp[ih * W + iw] * wp[i * KW + j];
        }
    }
    y[((long)nc * OH + oh) * OW + ow] = activate(acc, act, p0, p1);
}

// 2-D max / average pooling. kind: 0 max, 1 average (count_include_pad selects the divisor).
__kernel void pool2d_f32(const int H, const int W, const int KH, const int KW,
                         const int SH, const int SW, const int PH, const int PW,
                         const int DH, const int DW, const int OH, const int OW,
                         const int kind, const int count_include_pad,
                         __global const float *x, const long x_off, __global float *y)
{
    const int ow = get_global_id(0);
    const int oh = get_global_id(1);
    const int nc = get_global_id(2);
    if (ow >= OW || oh >= OH) return;
    __global const float *xp = x + x_off + (long)nc * H * W;
    float acc = kind == 0 ? -INFINITY : 0.0f;
    int count = 0, padded = 0;
    for (int i = 0; i < KH; ++i) {
        const int ih = oh * SH - PH + i * DH;
        for (int j = 0; j < KW; ++j) {
            const int iw = ow * SW - PW + j * DW;
            // average pooling counts padding inside the padded input, not past it (ceil_mode)
            if (ih < H + PH && iw < W + PW) ++padded;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const float v = xp[ih * W + iw];
            if (kind == 0) acc = v > acc || v != v ? v : acc;  // NaN propagates
            else acc += v;
            ++count;
        }
    }
    if (kind == 1) acc = acc / (float)(count_include_pad ? padded : count);
    y[((long)nc * OH + oh) * OW + ow] = acc;
}

// Reduction over the middle axis of [outer, R, inner]. op: 0 mean, 1 sum, 2 max, 3 min.
__kernel void reduce_f32(const int R, const int inner, const int total, const int op,
                         __global const float *x, const long x_off, __global float *y)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const int o = i / inner, in = i % inner;
    __global const float *xp = x + x_off + (long)o * R * inner + in;
    float acc = op == 2 ? -INFINITY : op == 3 ? INFINITY : 0.0f;
    for (int r = 0; r < R; ++r) {
        const float v = xp[(long)r * inner];
        if (op <= 1) acc += v;
        else if (op == 2) acc = v > acc || v != v ? v : acc;
        else acc = v < acc || v != v ? v : acc;
    }
    if (op == 0) acc /= (float)R;
    y[i] = acc;
}

// Softmax / LogSoftmax over the middle axis of [outer, R, inner].
__kernel void softmax_f32(const int R, const int inner, const int total, const int log_out,
                          __global const float *x, const long x_off, __global float *y)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const int o = i / inner, in = i % inner;
    const long base = (long)o * R * inner + in;
    __global const float *xp = x + x_off + base;
    __global float *yp = y + base;
    float m = -INFINITY;
    for (int r = 0; r < R; ++r) { const float v = xp[(long)r * inner]; m = v > m ? v : m; }
    float s = 0.0f;
    for (int r = 0; r < R; ++r) s += exp(xp[(long)r * inner] - m);
    if (log_out) {
        const float ls = log(s);
        for (int r = 0; r < R; ++r) yp[(long)r * inner] = xp[(long)r * inner] - m - ls;
    } else {
        const float inv = 1.0f / s;
        for (int r = 0; r < R; ++r) yp[(long)r * inner] = exp(xp[(long)r * inner] - m) * inv;
    }
}

// LayerNormalization over the last D elements of each row; scale/bias have stride 0 or 1.
__kernel void layernorm_f32(const int rows, const int D, const float eps,
                            __global const float *x, const long x_off,
                            __global const float *scale, const int s_stride,
                            __global const float *bias, const int b_stride, const int has_bias,
                            __global float *y, __global float *mean_out,
                            __global float *inv_out, const int stats)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *xp = x + x_off + (long)r * D;
    __global float *yp = y + (long)r * D;
    float mean = 0.0f;
    for (int i = 0; i < D; ++i) mean += xp[i];
    mean /= (float)D;
    float var = 0.0f;
    for (int i = 0; i < D; ++i) { const float d = xp[i] - mean; var += d * d; }
    const float inv = 1.0f / sqrt(var / (float)D + eps);
    for (int i = 0; i < D; ++i) {
        float v = (xp[i] - mean) * inv * scale[i * s_stride];
        if (has_bias) v += bias[i * b_stride];
        yp[i] = v;
    }
    if (stats) { mean_out[r] = mean; inv_out[r] = inv; }
}

// BatchNormalization (inference) with per-channel parameters that live on the device.
__kernel void batchnorm_f32(const int C, const int inner, const int total, const float eps,
                            __global const float *x, const long x_off,
                            __global const float *scale, __global const float *bias,
                            __global const float *mean, __global const float *var,
                            __global float *y, const int act, const float p0, const float p1)
{
    const int i = get_global_id(0);
    if (i >= total) return;
    const int c = (i / inner) % C;
    const float v = (x[x_off + i] - mean[c]) * (scale[c] / sqrt(var[c] + eps)) + bias[c];
    y[i] = activate(v, act, p0, p1);
}
