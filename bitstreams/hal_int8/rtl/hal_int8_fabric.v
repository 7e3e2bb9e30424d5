// Place-and-route wrapper for parts without a processor system (iCE40, ECP5): hal_int8's ~100
// bus inputs come from a shift register fed by one pin, its ~170 outputs are XOR-reduced into
// one registered pin. Every core port stays live, so the resources and the Fmax that nextpnr
// reports are those of the core (plus ~100 flip-flops and ~60 LUTs of wrapper) with registered
// boundaries; a board design would put a bus bridge where this wrapper is.
`default_nettype none
module hal_int8_fabric #(
    parameter integer PE_OUT = 4,
    parameter integer PE_IN = 2,
    parameter integer XDEPTH = 2048,
    parameter integer WDEPTH = 512,
    parameter integer RQ = 0,          // requantizers: 0 = one per lane, else shared by the lanes
    parameter integer OW_MAX = 64,
    parameter integer ARGRAM = 0,      // 1: argument registers in block RAM (hal_int8.v)
    parameter integer SZW = 16,        // size bits (hal_int8.v)
    parameter integer GROUPS = 1,      // 0: no grouped convolutions (hal_int8.v)
    parameter integer CYW = 64,        // cycle counter bits (hal_int8.v)
    parameter integer RQ_RADIX = 4,    // requantizer radix (hal_int8.v)
    parameter integer AW = 32          // address bits of the memory window the core reaches
) (
    input  wire clk,
    input  wire rst_n,
    input  wire sin,
    output reg  sout
);
    localparam integer NI = 1 + 8 + 1 + 32 + 4 + 1 + 1 + 8 + 1 + 1 + 1 + 32 + 1 + 1 + 1 + 1;
    reg [NI-1:0] si;
    always @(posedge clk) si <= {si[NI-2:0], sin};

    wire        irq, awready, wready, bvalid, arready, rvalid;
    wire [1:0]  bresp, rresp;
    wire [31:0] rdata;
    wire        m_arvalid, m_rready, m_awvalid, m_wvalid, m_wlast, m_bready;
    wire [AW-1:0] m_araddr, m_awaddr;
    wire [7:0]  m_arlen, m_awlen;
    wire [2:0]  m_arsize, m_awsize;
    wire [1:0]  m_arburst, m_awburst;
    wire [31:0] m_wdata;
    wire [3:0]  m_wstrb;

    hal_int8 #(.PE_OUT(PE_OUT), .PE_IN(PE_IN), .XDEPTH(XDEPTH), .WDEPTH(WDEPTH),
               .OW_MAX(OW_MAX), .RQ(RQ), .SZW(SZW), .GROUPS(GROUPS), .CYW(CYW), .AW(AW),
               .RQ_RADIX(RQ_RADIX), .ARGRAM(ARGRAM)) core (
        .ap_clk(clk), .ap_rst_n(rst_n), .interrupt(irq),
        .s_axi_control_awvalid(si[0]), .s_axi_control_awready(awready),
        .s_axi_control_awaddr(si[8:1]), .s_axi_control_wvalid(si[9]),
        .s_axi_control_wready(wready), .s_axi_control_wdata(si[41:10]),
        .s_axi_control_wstrb(si[45:42]), .s_axi_control_bvalid(bvalid),
        .s_axi_control_bready(si[46]), .s_axi_control_bresp(bresp),
        .s_axi_control_arvalid(si[47]), .s_axi_control_arready(arready),
        .s_axi_control_araddr(si[55:48]), .s_axi_control_rvalid(rvalid),
        .s_axi_control_rready(si[56]), .s_axi_control_rdata(rdata),
        .s_axi_control_rresp(rresp),
        .m_axi_gmem_arvalid(m_arvalid), .m_axi_gmem_arready(si[57]),
        .m_axi_gmem_araddr(m_araddr), .m_axi_gmem_arlen(m_arlen), .m_axi_gmem_arsize(m_arsize),
        .m_axi_gmem_arburst(m_arburst), .m_axi_gmem_rvalid(si[58]),
        .m_axi_gmem_rready(m_rready), .m_axi_gmem_rdata(si[90:59]), .m_axi_gmem_rlast(si[91]),
        .m_axi_gmem_awvalid(m_awvalid), .m_axi_gmem_awready(si[92]),
        .m_axi_gmem_awaddr(m_awaddr), .m_axi_gmem_awlen(m_awlen), .m_axi_gmem_awsize(m_awsize),
        .m_axi_gmem_awburst(m_awburst), .m_axi_gmem_wvalid(m_wvalid),
        .m_axi_gmem_wready(si[93]), .m_axi_gmem_wdata(m_wdata), .m_axi_gmem_wstrb(m_wstrb),
        .m_axi_gmem_wlast(m_wlast), .m_axi_gmem_bvalid(si[94]), .m_axi_gmem_bready(m_bready));

    wire [NI-1:0] unused_si = si;  // all bits feed the core
    always @(posedge clk)
        sout <= ^{irq, awready, wready, bvalid, bresp, arready, rvalid, rdata, rresp, m_arvalid,
                  m_araddr, m_arlen, m_arsize, m_arburst, m_rready, m_awvalid, m_awaddr,
                  m_awlen, m_awsize, m_awburst, m_wvalid, m_wdata, m_wstrb, m_wlast, m_bready,
                  unused_si[NI-1]};
endmodule
`default_nettype wire
