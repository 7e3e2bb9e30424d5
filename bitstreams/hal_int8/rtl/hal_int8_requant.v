// Requantizer of one lane: y = clamp((acc * m + 2**(s-1)) >> s, lo, hi), bit for bit
// backends/fpga/spec.py. The 64-bit product is formed serially (radix 4, 16 cycles), then
// shifted right arithmetically by s - 1 (8 or 1 bits a cycle); the last shift adds the
// rounding bit: floor((p + 2**(s-1)) / 2**s) == (floor(p / 2**(s-1)) + 1) >> 1.
`default_nettype none
module hal_int8_requant (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire [31:0] acc,     // int32
    input  wire [30:0] m,       // 0 .. 2**31-1
    input  wire [5:0]  s,       // 1 .. 62
    input  wire [31:0] lo,      // int32 max(act_min, -128)
    input  wire [31:0] hi,      // int32 min(act_max, 127): the result is clip(v, lo, hi) mod 2**8
    output reg  [7:0]  y,       // int8
    output wire        busy
);
    localparam [1:0] IDLE = 2'd0, MUL = 2'd1, SHIFT = 2'd2, ROUND = 2'd3;
    reg [1:0]  state;
    reg [63:0] p;
    reg [3:0]  digit;  // acc, m and s stay put while the lane requantizes
    reg [5:0]  sh;
    wire [31:0] mm = {1'b0, m};
    wire [1:0]  d = mm[{digit, 1'b0} +: 2];
    wire [63:0] a1 = {{32{acc[31]}}, acc};
    wire [63:0] addend = d == 2'd0 ? 64'd0 : d == 2'd1 ? a1 : d == 2'd2 ? {a1[62:0], 1'b0} :
                         a1 + {a1[62:0], 1'b0};
    wire [63:0] v = ($signed(p) + 64'sd1) >>> 1;
    wire [63:0] lo64 = {{32{lo[31]}}, lo};
    wire [63:0] hi64 = {{32{hi[31]}}, hi};
    wire [63:0] vlo = $signed(v) < $signed(lo64) ? lo64 : v;
    /* verilator lint_off UNUSEDSIGNAL */  // clamped to int8 unless lo/hi are out of range
    wire [63:0] vhi = $signed(vlo) > $signed(hi64) ? hi64 : vlo;
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
                    digit <= 4'd15;
                    state <= MUL;
                end
                MUL: begin
                    p <= {p[61:0], 2'b00} + addend;
                    digit <= digit - 4'd1;
                    if (digit == 4'd0) state <= SHIFT;
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
