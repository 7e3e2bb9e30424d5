// Sequential multiplier (AW x BW bits, BW cycles) and divider (AW / BW bits, AW cycles) for
// the layer set-up: sizes, strides and limits are computed once per layer, so a shift-add
// unit keeps them out of the DSPs and the LUT budget. Products are modulo 2**AW.
`default_nettype none
module hal_int8_seqmath #(
    parameter integer AW = 48,
    parameter integer BW = 16
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          start,
    input  wire          is_div,
    input  wire [AW-1:0] a,
    input  wire [BW-1:0] b,
    output reg  [AW-1:0] q,     // product (mul) or quotient (div)
    output reg  [BW:0]   r,     // remainder (div)
    output wire          busy
);
    localparam integer CW = $clog2(AW);
    localparam integer DL = AW - 1, ML = BW - 1;
    localparam [CW-1:0] DIV_LAST = DL[CW-1:0], MUL_LAST = ML[CW-1:0];
    reg          run, div;
    reg [CW-1:0] left;
    reg [AW-1:0] x;
    reg [BW-1:0] y;
    wire [BW+1:0] rs = {r, x[AW-1]};
    wire        ge = rs >= {2'b00, y};
    /* verilator lint_off UNUSEDSIGNAL */  // the remainder stays below the divisor
    wire [BW+1:0] rsub = rs - {2'b00, y};
    /* verilator lint_on UNUSEDSIGNAL */
    assign busy = run;
    always @(posedge clk) begin
        if (rst) begin
            run <= 1'b0;
        end else if (start) begin
            run <= 1'b1;
            div <= is_div;
            x <= a;
            y <= b;
            q <= {AW{1'b0}};
            r <= {(BW+1){1'b0}};
            left <= is_div ? DIV_LAST : MUL_LAST;
        end else if (run) begin
            if (div) begin
                r <= ge ? rsub[BW:0] : rs[BW:0];
                q <= {q[AW-2:0], ge};
                x <= {x[AW-2:0], 1'b0};
            end else begin
                q <= {q[AW-2:0], 1'b0} + (y[BW-1] ? x : {AW{1'b0}});
                y <= {y[BW-2:0], 1'b0};
            end
            left <= left - 1'b1;
            if (left == {CW{1'b0}}) run <= 1'b0;
        end
    end
endmodule
`default_nettype wire
