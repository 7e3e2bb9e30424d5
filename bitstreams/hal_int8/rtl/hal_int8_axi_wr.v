// AXI4 write master, 32-bit data: writes `len` streamed bytes from byte address `addr` (any
// alignment) as single-beat writes with byte strobes; responses are counted, not waited for,
// until the end of the command.
`default_nettype none
module hal_int8_axi_wr #(
    parameter integer AW = 64,
    parameter integer LENW = 32        // bits of a command's byte count
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          cmd_valid,
    input  wire [AW-1:0] cmd_addr,
    input  wire [LENW-1:0] cmd_len,   // > 0
    output wire          busy,
    input  wire          in_valid,
    input  wire [7:0]    in_data,
    output wire          in_ready,
    output reg           m_awvalid,
    input  wire          m_awready,
    output reg  [AW-1:0] m_awaddr,
    output wire [7:0]    m_awlen,
    output wire [2:0]    m_awsize,
    output wire [1:0]    m_awburst,
    output reg           m_wvalid,
    input  wire          m_wready,
    output reg  [31:0]   m_wdata,
    output reg  [3:0]    m_wstrb,
    output wire          m_wlast,
    input  wire          m_bvalid,
    output wire          m_bready
);
    localparam [1:0] IDLE = 2'd0, COLLECT = 2'd1, SEND = 2'd2, DRAIN = 2'd3;
    reg [1:0]    state;
    reg [AW-1:0] addr;
    reg [LENW-1:0] left;
    reg [7:0]    outstanding;
    wire aw_fire = m_awvalid && m_awready;
    wire b_fire = m_bvalid;
    assign busy = state != IDLE;
    assign in_ready = state == COLLECT;
    assign m_awlen = 8'd0;
    assign m_awsize = 3'b010;
    assign m_awburst = 2'b01;
    assign m_wlast = 1'b1;
    assign m_bready = 1'b1;
    always @(posedge clk) begin
        if (rst) begin
            state <= IDLE;
            m_awvalid <= 1'b0;
            m_wvalid <= 1'b0;
            outstanding <= 8'd0;
        end else begin
            if (aw_fire && !b_fire) outstanding <= outstanding + 8'd1;
            else if (b_fire && !aw_fire) outstanding <= outstanding - 8'd1;
            case (state)
                IDLE: if (cmd_valid) begin
                    addr <= cmd_addr;
                    left <= cmd_len;
                    m_wstrb <= 4'd0;
                    state <= COLLECT;
                end
                COLLECT: if (in_valid) begin
                    m_wdata[8 * addr[1:0] +: 8] <= in_data;
                    m_wstrb[addr[1:0]] <= 1'b1;
                    addr <= addr + 1'b1;
                    left <= left - 1'b1;
                    if (addr[1:0] == 2'd3 || left == 1) begin
                        m_awaddr <= {addr[AW-1:2], 2'b00};
                        m_awvalid <= 1'b1;
                        m_wvalid <= 1'b1;
                        state <= SEND;
                    end
                end
                SEND: begin
                    if (m_awready) m_awvalid <= 1'b0;
                    if (m_wready) m_wvalid <= 1'b0;
                    if ((!m_awvalid || m_awready) && (!m_wvalid || m_wready)) begin
                        m_wstrb <= 4'd0;
                        state <= left == 0 ? DRAIN : COLLECT;
                    end
                end
                default: if (outstanding == 8'd0 && !m_awvalid) state <= IDLE;  // DRAIN
            endcase
        end
    end
endmodule
`default_nettype wire
