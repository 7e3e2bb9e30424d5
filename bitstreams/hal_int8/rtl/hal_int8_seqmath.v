// Sequential multiplier (48 x 16 bits, 16 cycles) and divider (48 / 16 bits, 48 cycles) for
// the layer set-up: sizes, strides and limits are computed once per layer, so a shift-add
// unit keeps them out of the DSPs and the LUT budget.
`default_nettype none
module hal_int8_seqmath (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire        is_div,
    input  wire [47:0] a,
    input  wire [15:0] b,
    output reg  [47:0] q,     // product (mul) or quotient (div)
    output reg  [16:0] r,     // remainder (div)
    output wire        busy
);
    reg        run, div;
    reg [5:0]  left;
    reg [47:0] x;
    reg [15:0] y;
    wire [17:0] rs = {r, x[47]};
    wire        ge = rs >= {2'b00, y};
    /* verilator lint_off UNUSEDSIGNAL */  // the remainder stays below the divisor
    wire [17:0] rsub = rs - {2'b00, y};
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
            q <= 48'd0;
            r <= 17'd0;
            left <= is_div ? 6'd47 : 6'd15;
        end else if (run) begin
            if (div) begin
                r <= ge ? rsub[16:0] : rs[16:0];
                q <= {q[46:0], ge};
                x <= {x[46:0], 1'b0};
            end else begin
                q <= {q[46:0], 1'b0} + (y[15] ? x : 48'd0);
                y <= {y[14:0], 1'b0};
            end
            left <= left - 6'd1;
            if (left == 6'd0) run <= 1'b0;
        end
    end
endmodule
`default_nettype wire
