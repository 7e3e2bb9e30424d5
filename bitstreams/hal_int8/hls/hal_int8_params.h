// hal_int8's sizes, limits, op codes and status bits: plain #defines shared by the HLS kernel
// (hal_int8.h) and the OpenCL kernel (../opencl/hal_int8.cl, built with -I <this folder>),
// so the two cannot drift. The PE array and cycle-model figures may be set on the command line.
#ifndef HAL_INT8_PARAMS_H
#define HAL_INT8_PARAMS_H

#ifndef HAL_PE_OUT
#define HAL_PE_OUT 16
#endif
#ifndef HAL_PE_IN
#define HAL_PE_IN 16
#endif
// Cycle model of the memory side: one AXI beat moves HAL_AXI_BYTES bytes (128-bit HP port),
// each burst pays HAL_BURST_OVERHEAD cycles of address/latency; each computed output row pays
// HAL_PIPE_DEPTH cycles of MAC pipeline fill.
#ifndef HAL_AXI_BYTES
#define HAL_AXI_BYTES 16
#endif
#ifndef HAL_BURST_OVERHEAD
#define HAL_BURST_OVERHEAD 32
#endif
#ifndef HAL_PIPE_DEPTH
#define HAL_PIPE_DEPTH 12
#endif
#define HAL_MAX_XBUF 65536
#define HAL_MAX_WK 8192
#define HAL_MAX_OW 1024
#define HAL_MAX_K 131071  // spec.MAX_K: 2**17 - 1 products per output keep the int32 sum exact

// op register
#define HAL_OP_CONV 0
#define HAL_OP_GEMM 1
// status register bits (0 = done, output written)
#define HAL_ERR_OP 1      // op is neither conv nor gemm
#define HAL_ERR_SHAPE 2   // a size is < 1, groups do not divide C/O, or the output is empty
#define HAL_ERR_LIMIT 4   // the layer exceeds MAX_K or an on-chip buffer
#define HAL_ERR_QPARAM 8  // some m[c] < 0 or s[c] outside 1..62 (output partially written)

#endif
