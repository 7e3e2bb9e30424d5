// hal_int8: HAL's int8 layer accelerator in Verilog, the same core as ../hls/hal_int8.cpp behind
// the same AXI-lite register map (backends/fpga/transport.py, the #pragma offsets of the HLS
// top): ap_ctrl at 0x00 (ap_start, ap_done clear-on-read, ap_idle, ap_ready), GIE/IER/ISR,
// 64-bit buffer addresses (low word at the offset, high word at +4), int32 layer registers,
// status at 0xC8 and a 64-bit cycle counter (start to done) at 0xD0/0xD4.
// Data: one AXI4 master, 32-bit (hal_int8_core).
`default_nettype none
module hal_int8 #(
    parameter integer PE_OUT = 8,
    parameter integer PE_IN = 8,
    parameter integer XDEPTH = 8192,
    parameter integer WDEPTH = 1024,
    parameter integer RQ = 0,          // requantizers: 0 = one per lane, else shared by the lanes
    parameter integer OW_MAX = 256,
    parameter integer SZW = 16,        // size bits: a layer with a size >= 2**SZW gets LIMIT
    parameter integer GROUPS = 1,      // 0: a layer with groups > 1 gets LIMIT (no group loop)
    parameter integer CYW = 64,        // cycle counter bits (the register pair reads 0 above)
    parameter integer RQ_RADIX = 4,    // requantizer: radix 4 (16-cycle product) or 2 (32)
    parameter integer AW = 64,
    // 1: the argument registers live in block RAM; at ap_start a loader reads them (48 cycles)
    // into narrow copies the core needs, in the form its checks give the same answers on
    parameter integer ARGRAM = 0
) (
    input  wire          ap_clk,
    input  wire          ap_rst_n,
    /* verilator lint_off SYMRSVDWORD */
    output wire          interrupt,  // the Vitis HLS port name
    /* verilator lint_on SYMRSVDWORD */
    // AXI4-lite slave (control)
    input  wire          s_axi_control_awvalid,
    output wire          s_axi_control_awready,
    input  wire [7:0]    s_axi_control_awaddr,
    input  wire          s_axi_control_wvalid,
    output wire          s_axi_control_wready,
    input  wire [31:0]   s_axi_control_wdata,
    input  wire [3:0]    s_axi_control_wstrb,
    output reg           s_axi_control_bvalid,
    input  wire          s_axi_control_bready,
    output wire [1:0]    s_axi_control_bresp,
    input  wire          s_axi_control_arvalid,
    output wire          s_axi_control_arready,
    /* verilator lint_off UNUSEDSIGNAL */  // byte offsets within a register are ignored
    input  wire [7:0]    s_axi_control_araddr,
    /* verilator lint_on UNUSEDSIGNAL */
    output reg           s_axi_control_rvalid,
    input  wire          s_axi_control_rready,
    output reg  [31:0]   s_axi_control_rdata,
    output wire [1:0]    s_axi_control_rresp,
    // AXI4 master (data)
    output wire          m_axi_gmem_arvalid,
    input  wire          m_axi_gmem_arready,
    output wire [AW-1:0] m_axi_gmem_araddr,
    output wire [7:0]    m_axi_gmem_arlen,
    output wire [2:0]    m_axi_gmem_arsize,
    output wire [1:0]    m_axi_gmem_arburst,
    input  wire          m_axi_gmem_rvalid,
    output wire          m_axi_gmem_rready,
    input  wire [31:0]   m_axi_gmem_rdata,
    input  wire          m_axi_gmem_rlast,
    output wire          m_axi_gmem_awvalid,
    input  wire          m_axi_gmem_awready,
    output wire [AW-1:0] m_axi_gmem_awaddr,
    output wire [7:0]    m_axi_gmem_awlen,
    output wire [2:0]    m_axi_gmem_awsize,
    output wire [1:0]    m_axi_gmem_awburst,
    output wire          m_axi_gmem_wvalid,
    input  wire          m_axi_gmem_wready,
    output wire [31:0]   m_axi_gmem_wdata,
    output wire [3:0]    m_axi_gmem_wstrb,
    output wire          m_axi_gmem_wlast,
    input  wire          m_axi_gmem_bvalid,
    output wire          m_axi_gmem_bready
);
    wire rst = !ap_rst_n;
    // word-addressed argument registers (offset >> 2); only the implemented words are flip-flops,
    // high address words only when AW > 32
    localparam [63:0] HI = AW > 32 ? 64'h0000_0000_0012_4920 : 64'd0;
    localparam [63:0] PRESENT = 64'h0001_5555_5540_0000 | 64'h0000_0000_0009_2490 | HI;
    wire [31:0] regs [0:63];
    reg        ap_start, gie;
    reg        ap_done /* verilator public_flat_rd */;  // the co-simulation waits on it
    reg [1:0]  ier, isr;
    reg [CYW-1:0] cycles;
    wire [63:0] cycles64 = {{(64-CYW){1'b0}}, cycles};
    wire       busy, done;
    wire [3:0] status;
    wire       engaged;  // loading the arguments or running a layer
    wire       take = ap_start && !engaged;  // the start is taken this cycle
    wire       arg_wait;  // ARGRAM: read data comes from block RAM a cycle later

    // ---- AXI-lite write: address and data may arrive in either order ----
    reg       aw_have, w_have;
    reg [7:0] aw_addr;
    reg [31:0] w_data;
    reg [3:0]  w_strb;
    assign s_axi_control_awready = !aw_have && !s_axi_control_bvalid;
    assign s_axi_control_wready = !w_have && !s_axi_control_bvalid;
    assign s_axi_control_bresp = 2'b00;
    wire       aw_ok = aw_have || (s_axi_control_awvalid && s_axi_control_awready);
    wire       w_ok = w_have || (s_axi_control_wvalid && s_axi_control_wready);
    /* verilator lint_off UNUSEDSIGNAL */
    wire [7:0] wa_full = aw_have ? aw_addr : s_axi_control_awaddr;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [5:0] wa = wa_full[7:2];  // word index: registers are 32-bit aligned
    wire [31:0] wdat = w_have ? w_data : s_axi_control_wdata;
    wire [3:0] wstb = w_have ? w_strb : s_axi_control_wstrb;
    wire       wr_now = aw_ok && w_ok && !s_axi_control_bvalid;

    // ---- AXI-lite read ----
    assign s_axi_control_arready = !s_axi_control_rvalid && !arg_wait;
    assign s_axi_control_rresp = 2'b00;
    wire rd_now = s_axi_control_arvalid && s_axi_control_arready;
    wire [5:0] ra = s_axi_control_araddr[7:2];
    reg  [31:0] rval;
    always @* begin
        case (ra)
            6'h00: rval = {28'd0, !ap_start && !engaged && ap_done, !engaged && !ap_start, ap_done,
                           ap_start || engaged};
            6'h01: rval = {31'd0, gie};
            6'h02: rval = {30'd0, ier};
            6'h03: rval = {30'd0, isr};
            6'h32: rval = {28'd0, status};
            6'h34: rval = cycles64[31:0];
            6'h35: rval = cycles64[63:32];
            default: rval = ARGRAM != 0 ? 32'd0 : regs[ra];  // ARGRAM: from block RAM, below
        endcase
    end

    always @(posedge ap_clk) begin
        if (rst) begin
            aw_have <= 1'b0;
            w_have <= 1'b0;
            s_axi_control_bvalid <= 1'b0;
            s_axi_control_rvalid <= 1'b0;
            ap_start <= 1'b0;
            ap_done <= 1'b0;
            gie <= 1'b0;
            ier <= 2'd0;
            isr <= 2'd0;
            cycles <= {CYW{1'b0}};
        end else begin
            if (s_axi_control_bvalid && s_axi_control_bready) s_axi_control_bvalid <= 1'b0;
            if (s_axi_control_awvalid && s_axi_control_awready && !wr_now) begin
                aw_have <= 1'b1;
                aw_addr <= s_axi_control_awaddr;
            end
            if (s_axi_control_wvalid && s_axi_control_wready && !wr_now) begin
                w_have <= 1'b1;
                w_data <= s_axi_control_wdata;
                w_strb <= s_axi_control_wstrb;
            end
            if (wr_now) begin
                aw_have <= 1'b0;
                w_have <= 1'b0;
                s_axi_control_bvalid <= 1'b1;
                case (wa)
                    6'h00: if (wstb[0] && wdat[0] && !engaged) ap_start <= 1'b1;
                    6'h01: if (wstb[0]) gie <= wdat[0];
                    6'h02: if (wstb[0]) ier <= wdat[1:0];
                    6'h03: if (wstb[0]) isr <= isr ^ (isr & wdat[1:0]);  // toggle-on-write
                    default: ;  // argument registers: below
                endcase
            end
            if (s_axi_control_rvalid && s_axi_control_rready) s_axi_control_rvalid <= 1'b0;
            if (arg_wait) begin
                s_axi_control_rvalid <= 1'b1;
                s_axi_control_rdata <= arg_rdata;
            end
            if (rd_now) begin
                s_axi_control_rvalid <= !arg_read;
                s_axi_control_rdata <= rval;
                if (ra == 6'h00 && !(done)) ap_done <= 1'b0;  // ap_done clears on read
            end
            if (take) begin
                ap_done <= 1'b0;
                cycles <= {CYW{1'b0}};
            end
            if (engaged) begin
                ap_start <= 1'b0;
                cycles <= cycles + 1'b1;
            end
            if (done) begin
                ap_done <= 1'b1;
                isr <= isr | (ier & 2'b11);
            end
        end
    end
    assign interrupt = gie && isr != 2'd0;

    genvar k;
    wire arg_read = ARGRAM != 0 && rd_now && PRESENT[ra];
    wire core_start;
    wire [31:0] arg_rdata;
    generate
        if (ARGRAM == 0) begin : ffargs
            for (k = 0; k < 64; k = k + 1) begin : arg
                if (PRESENT[k]) begin : q
                    reg [31:0] v;
                    integer i;
                    always @(posedge ap_clk)
                        for (i = 0; i < 4; i = i + 1)  // byte enables: no merge logic per bit
                            if (rst) v[8 * i +: 8] <= 8'd0;
                            else if (wr_now && wa == k && wstb[i]) v[8 * i +: 8] <= wdat[8 * i +: 8];
                    assign regs[k] = v;
                end else begin : none
                    assign regs[k] = 32'd0;
                end
            end
            assign engaged = busy;
            assign core_start = take;
            assign arg_wait = 1'b0;
            assign arg_rdata = 32'd0;
        end else begin : ramargs
            // two copies written alike: one answers the host, one feeds the loader
            wire [31:0] ld_rd;
            wire        arg_write = wr_now && PRESENT[wa];
            reg         loading, ld_v, kick, pend;
            reg  [5:0]  ldw, ldq;
            for (k = 0; k < 4; k = k + 1) begin : lane
                hal_int8_ram #(.WIDTH(8), .DEPTH(64), .AW(6)) host (
                    .clk(ap_clk), .we(arg_write && wstb[k]), .wa(wa), .wd(wdat[8 * k +: 8]),
                    .ra(ra), .rd(arg_rdata[8 * k +: 8]));
                hal_int8_ram #(.WIDTH(8), .DEPTH(64), .AW(6)) load (
                    .clk(ap_clk), .we(arg_write && wstb[k]), .wa(wa), .wd(wdat[8 * k +: 8]),
                    .ra(ldw), .rd(ld_rd[8 * k +: 8]));
            end
            always @(posedge ap_clk) begin
                if (rst) begin
                    loading <= 1'b0;
                    ld_v <= 1'b0;
                    kick <= 1'b0;
                    pend <= 1'b0;
                end else begin
                    pend <= arg_read;
                    ld_v <= loading;
                    ldq <= ldw;
                    kick <= ld_v && ldq == 6'h30;
                    if (take) begin
                        loading <= 1'b1;
                        ldw <= 6'h04;
                    end else if (loading) begin
                        ldw <= ldw + 6'd1;
                        if (ldw == 6'h30) loading <= 1'b0;
                    end
                end
            end
            assign engaged = busy || loading || ld_v || kick;
            assign core_start = kick;
            assign arg_wait = pend;
            for (k = 0; k < 64; k = k + 1) begin : arg
                // addresses, and the sizes of the exact h + 2 pad >= kh check, as written
                if (PRESENT[k] && (k < 6'h16 || k == 6'h1c || k == 6'h1e || k == 6'h22 ||
                                   k == 6'h24 || k == 6'h28)) begin : full
                    reg [31:0] v;
                    always @(posedge ap_clk)
                        if (rst) v <= 32'd0;
                        else if (ld_v && ldq == k) v <= ld_rd;
                    assign regs[k] = v;
                end else if (k == 6'h2c || k == 6'h2e) begin : act
                    // act_min clamped to [-128, 128]; act_max to at most 127 and, below -128,
                    // to -512 + its low byte: lo = max(act_min, -128), hi = min(act_max, 127)
                    // then clamp as with the full values
                    reg [9:0] v;
                    wire [31:0] d = ld_rd;
                    wire [9:0] amin = $signed(d) < -32'sd128 ? 10'h380 :
                                      $signed(d) > 32'sd128 ? 10'd128 : d[9:0];
                    wire [9:0] amax = $signed(d) > 32'sd127 ? 10'd127 :
                                      $signed(d) < -32'sd128 ? {2'b10, d[7:0]} : d[9:0];
                    always @(posedge ap_clk)
                        if (rst) v <= 10'd0;
                        else if (ld_v && ldq == k) v <= k == 6'h2c ? amin : amax;
                    assign regs[k] = {{22{v[9]}}, v};
                end else if (PRESENT[k]) begin : size
                    // other sizes: bit 31 if negative, 2**SZW if above 2**SZW - 1, else
                    // themselves (the core's checks answer alike: < 1, >= 2**SZW; op > 1,
                    // op == 0; a negative size is refused before its other bits count)
                    reg       neg, big;
                    reg [SZW-1:0] v;
                    wire [31:0] d = ld_rd;
                    wire      over = d[30:SZW] != {(31-SZW){1'b0}};
                    always @(posedge ap_clk)
                        if (rst) begin
                            neg <= 1'b0;
                            big <= 1'b0;
                            v <= {SZW{1'b0}};
                        end else if (ld_v && ldq == k) begin
                            neg <= d[31];
                            big <= !d[31] && over;
                            v <= d[31] || over ? {SZW{1'b0}} : d[SZW-1:0];
                        end
                    assign regs[k] = {neg, {(30-SZW){1'b0}}, big, v};
                end else begin : none
                    assign regs[k] = 32'd0;
                end
            end
        end
    endgenerate

    /* verilator lint_off UNUSEDSIGNAL */  // AW < 64 keeps the low AW bits
    function automatic [AW-1:0] addr64(input [31:0] lo, input [31:0] hi);
        reg [63:0] t;
        begin
            t = {hi, lo};
            addr64 = t[AW-1:0];
        end
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */

    hal_int8_core #(.PE_OUT(PE_OUT), .PE_IN(PE_IN), .XDEPTH(XDEPTH), .WDEPTH(WDEPTH),
                    .OW_MAX(OW_MAX), .RQ(RQ), .SZW(SZW), .GROUPS(GROUPS),
                    .RQ_RADIX(RQ_RADIX), .AW(AW)) core (
        .clk(ap_clk), .rst(rst), .start(core_start), .busy(busy), .done(done),
        .status(status),
        .a_x(addr64(regs[6'h04], regs[6'h05])), .a_w(addr64(regs[6'h07], regs[6'h08])),
        .a_bias(addr64(regs[6'h0a], regs[6'h0b])), .a_mult(addr64(regs[6'h0d], regs[6'h0e])),
        .a_shift(addr64(regs[6'h10], regs[6'h11])), .a_y(addr64(regs[6'h13], regs[6'h14])),
        .r_op(regs[6'h16]), .r_n(regs[6'h18]), .r_c(regs[6'h1a]), .r_h(regs[6'h1c]),
        .r_wd(regs[6'h1e]), .r_o(regs[6'h20]), .r_kh(regs[6'h22]), .r_kw(regs[6'h24]),
        .r_stride(regs[6'h26]), .r_pad(regs[6'h28]), .r_groups(regs[6'h2a]),
        .r_act_min(regs[6'h2c]), .r_act_max(regs[6'h2e]), .r_pool(regs[6'h30]),
        .m_arvalid(m_axi_gmem_arvalid), .m_arready(m_axi_gmem_arready),
        .m_araddr(m_axi_gmem_araddr), .m_arlen(m_axi_gmem_arlen), .m_arsize(m_axi_gmem_arsize),
        .m_arburst(m_axi_gmem_arburst), .m_rvalid(m_axi_gmem_rvalid),
        .m_rready(m_axi_gmem_rready), .m_rdata(m_axi_gmem_rdata), .m_rlast(m_axi_gmem_rlast),
        .m_awvalid(m_axi_gmem_awvalid), .m_awready(m_axi_gmem_awready),
        .m_awaddr(m_axi_gmem_awaddr), .m_awlen(m_axi_gmem_awlen), .m_awsize(m_axi_gmem_awsize),
        .m_awburst(m_axi_gmem_awburst), .m_wvalid(m_axi_gmem_wvalid),
        .m_wready(m_axi_gmem_wready), .m_wdata(m_axi_gmem_wdata), .m_wstrb(m_axi_gmem_wstrb),
        .m_wlast(m_axi_gmem_wlast), .m_bvalid(m_axi_gmem_bvalid), .m_bready(m_axi_gmem_bready));
endmodule
`default_nettype wire
