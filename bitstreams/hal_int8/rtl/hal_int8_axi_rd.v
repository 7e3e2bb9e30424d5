// AXI4 read master, 32-bit data: streams `len` bytes from byte address `addr` (any alignment)
// one byte a cycle. INCR bursts of up to 16 beats that never cross a 4 KiB boundary.
`default_nettype none
module hal_int8_axi_rd #(
    parameter integer AW = 64,
    parameter integer LENW = 32        // bits of a command's byte count
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          cmd_valid,
    input  wire [AW-1:0] cmd_addr,
    input  wire [LENW-1:0] cmd_len,   // > 0
    output wire          busy,
    output wire          out_valid,
    output wire [7:0]    out_data,
    input  wire          out_ready,
    // AXI4 read address / data channels
    output reg           m_arvalid,
    input  wire          m_arready,
    output wire [AW-1:0] m_araddr,
    output reg  [7:0]    m_arlen,
    output wire [2:0]    m_arsize,
    output wire [1:0]    m_arburst,
    input  wire          m_rvalid,
    output wire          m_rready,
    input  wire [31:0]   m_rdata,
    input  wire          m_rlast
);
    localparam [1:0] IDLE = 2'd0, AR = 2'd1, R = 2'd2;
    reg [1:0]    state;
    reg [AW-1:0] addr;  // next byte to deliver
    reg [LENW-1:0] left;  // bytes still to deliver
    wire [32:0] need = ({{(33-LENW){1'b0}}, left} + {31'd0, addr[1:0]} + 33'd3) >> 2;  // beats
    wire [10:0] to4k = 11'd1024 - {1'b0, addr[11:2]};                      // beats to 4 KiB
    wire [10:0] lim = to4k < 11'd16 ? to4k : 11'd16;
    /* verilator lint_off UNUSEDSIGNAL */  // at most 16
    wire [10:0] beats = need < {22'd0, lim} ? need[10:0] : lim;
    /* verilator lint_on UNUSEDSIGNAL */
    wire take = state == R && m_rvalid && out_ready;
    wire beat_end = addr[1:0] == 2'd3 || left == 1;
    assign busy = state != IDLE;
    assign m_araddr = {addr[AW-1:2], 2'b00};
    assign m_arsize = 3'b010;
    assign m_arburst = 2'b01;
    assign out_valid = state == R && m_rvalid;
    assign out_data = m_rdata[8 * addr[1:0] +: 8];
    assign m_rready = take && beat_end;
    always @(posedge clk) begin
        if (rst) begin
            state <= IDLE;
            m_arvalid <= 1'b0;
        end else begin
            case (state)
                IDLE: if (cmd_valid) begin
                    addr <= cmd_addr;
                    left <= cmd_len;
                    state <= AR;
                end
                AR: if (!m_arvalid) begin
                    m_arvalid <= 1'b1;
                    m_arlen <= beats[7:0] - 8'd1;
                end else if (m_arready) begin
                    m_arvalid <= 1'b0;
                    state <= R;
                end
                default: if (take) begin  // R
                    addr <= addr + 1'b1;
                    left <= left - 1'b1;
                    if (beat_end && m_rlast) state <= left == 1 ? IDLE : AR;
                end
            endcase
        end
    end
endmodule
`default_nettype wire
