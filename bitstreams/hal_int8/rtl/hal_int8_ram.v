// Simple dual-port RAM (one write port, one registered read port): infers block RAM.
`default_nettype none
module hal_int8_ram #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 512,
    parameter integer AW = 9
) (
    input  wire             clk,
    input  wire             we,
    input  wire [AW-1:0]    wa,
    input  wire [WIDTH-1:0] wd,
    input  wire [AW-1:0]    ra,
    output reg  [WIDTH-1:0] rd
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    always @(posedge clk) begin
        if (we) mem[wa] <= wd;
        rd <= mem[ra];
    end
endmodule
`default_nettype wire
