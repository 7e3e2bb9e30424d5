// hal_int8: HAL's int8 layer accelerator (one conv2d or gemm layer per start).
//
// Arithmetic (bit for bit hal.backends.fpga.spec):
//   acc = bias[c] + sum x*w       int8 x int8 products, int32 sum (wraps modulo 2**32)
//   y   = (acc*m[c] + 2**(s[c]-1)) >> s[c]   64-bit product, arithmetic shift (round half up)
//   y   = min(max(y, max(act_min,-128)), min(act_max,127))
//   optional pool x pool / stride pool max-pool of the int8 result (partial windows dropped)
//
// Data in DDR: x int8 NCHW contiguous (gemm: [N,K]), w int8 OIHW (gemm: [O,K]),
// bias/mult/shift int32 [O], y int8 NCHW (gemm: [N,O]).
//
// The PE array is HAL_PE_OUT x HAL_PE_IN int8 MACs: HAL_PE_OUT output channels (lanes) by
// HAL_PE_IN input channels, one (ky,kx,input-channel chunk) step per cycle. Lanes may span
// groups, so a depthwise layer keeps all HAL_PE_OUT lanes busy (but only 1 of HAL_PE_IN).
// On-chip buffers (sizes are the layer limits; a layer beyond them gets HAL_ERR_LIMIT):
//   xbuf  kh input rows x (W + 2*pad) columns x channels of the tile's groups   <= HAL_MAX_XBUF
//   wbuf  HAL_PE_OUT lanes x (C/groups)*kh*kw weights per lane                   <= HAL_MAX_WK
//   obuf  HAL_PE_OUT lanes x one output row (pooled width)                      <= HAL_MAX_OW
#ifndef HAL_INT8_H
#define HAL_INT8_H

#include <stdint.h>

#include "hal_int8_params.h"

#ifdef __cplusplus
void hal_int8_layer(const int8_t *x, const int8_t *w, const int32_t *bias, const int32_t *mult,
                    const int32_t *shift, int8_t *y, int32_t op, int32_t n, int32_t c, int32_t h,
                    int32_t wd, int32_t o, int32_t kh, int32_t kw, int32_t stride, int32_t pad,
                    int32_t groups, int32_t act_min, int32_t act_max, int32_t pool,
                    int32_t &status, int64_t &cycles);

extern "C" {
#endif
// C ABI of the simulation library (libhal_int8_sim.so): the same call, outputs by pointer.
int32_t hal_int8_sim_layer(const int8_t *x, const int8_t *w, const int32_t *bias,
                           const int32_t *mult, const int32_t *shift, int8_t *y, int32_t op,
                           int32_t n, int32_t c, int32_t h, int32_t wd, int32_t o, int32_t kh,
                           int32_t kw, int32_t stride, int32_t pad, int32_t groups,
                           int32_t act_min, int32_t act_max, int32_t pool, int64_t *cycles);
// Compile-time parameters: PE_OUT, PE_IN, AXI_BYTES, BURST_OVERHEAD, PIPE_DEPTH, MAX_XBUF,
// MAX_WK, MAX_OW, MAX_K (9 values).
void hal_int8_sim_config(int64_t *out);
#ifdef __cplusplus
}
#endif

#endif
