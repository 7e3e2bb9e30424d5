// Requantizer of one lane: y = clamp((acc * m + 2**(s-1)) >> s, lo, hi), bit for bit
// backends/fpga/spec.py. The 64-bit product is formed serially, least significant digit first
// (radix 4, 16 cycles, or with RADIX = 2 32 cycles and no 3 x acc adder: a 35-bit adder on the
// upper half, the lower half shifts in), then
// shifted right arithmetically by s - 1 (8 or 1 bits a cycle); the last step adds the
// rounding bit: floor((p + 2**(s-1)) / 2**s) == (floor(p / 2**(s-1)) + 1) >> 1. Rounding and
// clamping run in 12 bits: lo >= -128 and hi <= 127, so a value outside [-2048, 2047]
// clamps as any far-out value does.
`default_nettype none
module hal_int8_requant #(
    parameter integer RADIX = 4        // 4 or 2: product digits of 2 or 1 bits
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire [31:0] acc,     // int32
    input  wire [30:0] m,       // 0 .. 2**31-1
    input  wire [5:0]  s,       // 1 .. 62
    input  wire [11:0] lo,      // max(act_min, -128), above 128 as 128 (hal_int8_core)
    input  wire [11:0] hi,      // min(act_max, 127), below -128 as its low byte - 512: the
                                // result is clip(v, lo, hi) mod 2**8
    output reg  [7:0]  y,       // int8
    output wire        busy
);
    localparam [1:0] IDLE = 2'd0, MUL = 2'd1, SHIFT = 2'd2, ROUND = 2'd3;
    reg [1:0]  state;
    reg [63:0] p;
    localparam R2 = RADIX == 2;
    localparam [4:0] LAST = R2 ? 5'd31 : 5'd15;
    reg [4:0]  digit;  // acc, m and s stay put while the lane requantizes
    reg [5:0]  sh;
    wire [31:0] mm = {1'b0, m};
    wire [1:0]  d = R2 ? {1'b0, mm[digit]} : mm[{digit[3:0], 1'b0} +: 2];
    wire [33:0] a1 = {{2{acc[31]}}, acc};
    wire [33:0] a3 = R2 ? 34'd0 : a1 + {a1[32:0], 1'b0};
    wire [33:0] addend = d == 2'd0 ? 34'd0 : d == 2'd1 ? a1 : d == 2'd2 ? {a1[32:0], 1'b0} : a3;
    // p + addend * 2**32, then / 4 (/ 2): exact, and after k digits |p| < 2**63
    /* verilator lint_off UNUSEDSIGNAL */
    wire [34:0] upper = {{3{p[63]}}, p[63:32]} + {addend[33], addend};
    /* verilator lint_on UNUSEDSIGNAL */
    wire        fits = p[63:11] == {53{p[11]}};
    /* verilator lint_off UNUSEDSIGNAL */  // bit 0 is the rounded-off half
    wire [12:0] r13 = {p[11], p[11:0]} + 13'd1;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [11:0] v = fits ? r13[12:1] : p[63] ? 12'h800 : 12'h7ff;
    wire [11:0] vlo = $signed(v) < $signed(lo) ? lo : v;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [11:0] vhi = $signed(vlo) > $signed(hi) ? hi : vlo;
    /* verilator lint_on UNUSEDSIGNAL */
    assign busy = state != IDLE;
    always @(posedge clk) begin
        if (rst) begin
            state <= IDLE;
        end else begin
            case (state)
                IDLE: if (start) begin
                    sh <= s - 6'd1;
                    p <= 64'd0;
                    digit <= 5'd0;
                    state <= MUL;
                end
                MUL: begin
                    p <= R2 ? {upper[32:0], p[31:1]} : {upper[33:0], p[31:2]};
                    digit <= digit + 5'd1;
                    if (digit == LAST) state <= SHIFT;
                end
                SHIFT: begin
                    if (sh >= 6'd8) begin
                        p <= $signed(p) >>> 8;
                        sh <= sh - 6'd8;
                    end else if (sh != 6'd0) begin
                        p <= $signed(p) >>> 1;
                        sh <= sh - 6'd1;
                    end else begin
                        state <= ROUND;
                    end
                end
                default: begin  // ROUND
                    y <= vhi[7:0];
                    state <= IDLE;
                end
            endcase
        end
    end
endmodule
`default_nettype wire
