// hal_int8 layer engine: one int8 conv2d / gemm layer per start, bit for bit
// backends/fpga/spec.py (see ../hls/hal_int8.h for the data layout and status bits).
//
// Loop nest (one PE_OUT x PE_IN step per cycle in MAC):
//   for each group g, tile of up to PE_OUT output channels in_img g:
//     load bias/mult/shift and the tile's weights into per-lane banks ([ky][kx][ic] words of
//     PE_IN channels);
//     for each image b: load the group's input channels into the x banks ([y][x][ic] words)
//       (skipped when that image and group are already there), then for each output pixel:
//       acc = bias; for ky, kx, ic word: acc[p] += sum_q x[q] * w[p][q] (padding reads 0);
//       requantize all lanes in parallel; max-pool into a row buffer; store pooled rows.
// Sizes of 2**SZW or more (65536 by default) and layers beyond the banks (XDEPTH, WDEPTH words;
// OW_MAX pooled columns) or MAX_K = 2**17 - 1 products per output are refused with the LIMIT
// status bit. Counters and set-up results are as wide as those limits let them be.
`default_nettype none
module hal_int8_core #(
    parameter integer PE_OUT = 8,
    parameter integer PE_IN = 8,
    parameter integer XDEPTH = 8192,   // words of PE_IN bytes in the input banks
    parameter integer WDEPTH = 1024,   // words of PE_IN bytes per lane in the weight banks
    parameter integer OW_MAX = 256,    // pooled output columns of the row buffer
    parameter integer RQ = 0,          // requantizers: 0 = one per lane, N = N shared in turns
    parameter integer SZW = 16,        // size bits: a size >= 2**SZW is refused (LIMIT)
    parameter integer GROUPS = 1,      // 0: no loop over groups, a layer with groups > 1 gets LIMIT
    parameter integer RQ_RADIX = 4,    // requantizer product digits: 4 (16 cycles) or 2 (32)
    parameter integer AW = 64          // AXI address bits
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          start,
    output reg           busy,
    output reg           done,         // one-cycle pulse at the end
    output reg  [3:0]    status,
    input  wire [AW-1:0] a_x, a_w, a_bias, a_mult, a_shift, a_y,
    input  wire [31:0]   r_op, r_n, r_c, r_h, r_wd, r_o, r_kh, r_kw, r_stride, r_pad,
    input  wire [31:0]   r_groups, r_act_min, r_act_max, r_pool,
    // AXI4 master (32-bit data)
    output wire          m_arvalid,
    input  wire          m_arready,
    output wire [AW-1:0] m_araddr,
    output wire [7:0]    m_arlen,
    output wire [2:0]    m_arsize,
    output wire [1:0]    m_arburst,
    input  wire          m_rvalid,
    output wire          m_rready,
    input  wire [31:0]   m_rdata,
    input  wire          m_rlast,
    output wire          m_awvalid,
    input  wire          m_awready,
    output wire [AW-1:0] m_awaddr,
    output wire [7:0]    m_awlen,
    output wire [2:0]    m_awsize,
    output wire [1:0]    m_awburst,
    output wire          m_wvalid,
    input  wire          m_wready,
    output wire [31:0]   m_wdata,
    output wire [3:0]    m_wstrb,
    output wire          m_wlast,
    input  wire          m_bvalid,
    output wire          m_bready
);
    localparam integer XAW = $clog2(XDEPTH);
    localparam integer WAW = $clog2(WDEPTH);
    localparam integer OAW = $clog2(OW_MAX);
    // input-bank address arithmetic modulo 2**SAW: only the low XAW bits address the bank, and
    // inside the image (the only place it is read) the address is below XDEPTH
    localparam integer SAW = XAW;
    localparam integer LPW = (XAW > WAW ? XAW : WAW) + 1;  // loads: positions <= XDEPTH, WDEPTH
    // read / write lengths: weights kk <= WDEPTH * PE_IN, inputs <= XDEPTH * PE_IN, 4 * PE_OUT
    // parameter bytes, OW_MAX output bytes
    localparam integer LEN0 = LPW + (PE_IN > 1 ? $clog2(PE_IN) : 0) + 1;
    localparam integer LEN1 = $clog2(OW_MAX) + 1 > $clog2(PE_OUT) + 3 ? $clog2(OW_MAX) + 1 :
                              $clog2(PE_OUT) + 3;
    localparam integer LENW = LEN0 > LEN1 ? LEN0 : LEN1;
    localparam [SZW-1:0] PO = PE_OUT[SZW-1:0];
    localparam [SZW-1:0] PI = PE_IN[SZW-1:0];
    localparam [7:0] PI8 = PE_IN[7:0];
    localparam GRP = GROUPS != 0;
    localparam integer LW = PE_OUT > 1 ? $clog2(PE_OUT) : 1;
    localparam integer OFW = AW < 48 ? AW : 48;  // byte offsets into buffers
    // output coordinates: oh <= h + 2 pad - kh + 1 < 3 * 2**SZW; input coordinates (signed)
    // run from -pad to below -pad + ow * stride <= w + pad - kw + stride
    localparam integer CW = SZW + 2;
    localparam integer ICW = SZW + 3;
    localparam integer KB = 17;            // kh * kw and products per output: MAX_K = 2**KB - 1
    localparam integer YW = CW + OAW + 1;  // bytes of one output channel: ph * pw, pw <= OW_MAX
    // set-up multiplier/divider width: exact for every product whose size is checked
    // (kh * kw and kk against MAX_K, hw * cw against XDEPTH, ph * pw), modulo 2**OFW for offsets
    localparam integer MW0 = OFW > 2 * SZW ? OFW : 2 * SZW;
    localparam integer MW1 = LPW + SZW > KB + SZW ? LPW + SZW : KB + SZW;
    localparam integer MW2 = MW0 > MW1 ? MW0 : MW1;
    localparam integer MW = MW2 > YW ? MW2 : YW;
    /* verilator lint_off WIDTH */
    localparam [MW-1:0] XD = XDEPTH;
    localparam [MW-1:0] WD = WDEPTH;
    localparam [CW-1:0] OM = OW_MAX;
    /* verilator lint_on WIDTH */
    localparam [3:0] ERR_OP = 4'd1, ERR_SHAPE = 4'd2, ERR_LIMIT = 4'd4, ERR_QPARAM = 4'd8;
    localparam [2:0] K_BIAS = 3'd0, K_MULT = 3'd1, K_SHIFT = 3'd2, K_W = 3'd3, K_X = 3'd4;
    localparam [4:0] SETUP_LAST = 5'd22, TILE_FIRST = 5'd23, TILE_LAST = 5'd24;

    localparam [4:0] S_IDLE = 5'd0, S_CHECK = 5'd1, S_MATH = 5'd2, S_MATHW = 5'd3,
                     S_CHECK2 = 5'd4, S_TILE = 5'd5, S_RD = 5'd6, S_RDW = 5'd7,
                     S_QCHK = 5'd8, S_IMG = 5'd9, S_ROW = 5'd10, S_PIX = 5'd11, S_MAC = 5'd12,
                     S_D1 = 5'd13, S_D2 = 5'd14, S_RQ = 5'd15, S_RQW = 5'd16, S_UPD0 = 5'd17,
                     S_UPD1 = 5'd18, S_NEXTROW = 5'd19, S_STORE = 5'd20, S_WR = 5'd21,
                     S_ST0 = 5'd22, S_ST1 = 5'd23, S_STW = 5'd24, S_NEXTTILE = 5'd25,
                     S_FINISH = 5'd26;
    reg [4:0] state;

    // ---- layer registers (latched at start; gemm is a 1x1 conv of N 1x1 images) ----
    // the conv-only registers (h, wd, kh, kw, stride, pad, groups, pool) count only for a conv:
    // checked with `conv`, and read as 1 (0 for pad and pool) by the sequencer for a gemm
    wire        conv = r_op == 32'd0;
    // the sizes in SZW bits, as the sequencer uses them once `big` has been checked
    localparam [SZW-1:0] S1 = {{(SZW-1){1'b0}}, 1'b1};
    wire [SZW-1:0] ns = r_n[SZW-1:0], cs = r_c[SZW-1:0], os = r_o[SZW-1:0];
    wire [SZW-1:0] hs = conv ? r_h[SZW-1:0] : S1, ws = conv ? r_wd[SZW-1:0] : S1;
    wire [SZW-1:0] khs = conv ? r_kh[SZW-1:0] : S1, kws = conv ? r_kw[SZW-1:0] : S1;
    wire [SZW-1:0] ss = conv ? r_stride[SZW-1:0] : S1, gs = conv ? r_groups[SZW-1:0] : S1;
    wire [SZW-1:0] pads = conv ? r_pad[SZW-1:0] : {SZW{1'b0}};
    wire [SZW-1:0] pool_s = conv ? r_pool[SZW-1:0] : {SZW{1'b0}};
    wire [SZW-1:0] pks = |pool_s[SZW-1:1] ? pool_s : S1;  // pool window: max(pool, 1)
    // activation bounds in 12 bits, latched at start (hal_int8_requant): lo = max(act_min,
    // -128) and hi = min(act_max, 127), where lo > 128 acts as 128 and hi < -128 as its low
    // byte below -256, as the clamp of a 12-bit value gives the same result for them
    reg  [11:0] lo12, hi12;
    wire [11:0] lo12_in = $signed(r_act_min) < -32'sd128 ? 12'hf80 :
                          $signed(r_act_min) > 32'sd128 ? 12'd128 : r_act_min[11:0];
    wire [11:0] hi12_in = $signed(r_act_max) > 32'sd127 ? 12'd127 :
                          $signed(r_act_max) < -32'sd128 ? {4'b1110, r_act_max[7:0]} :
                          r_act_max[11:0];

    // ---- derived sizes (set-up steps of the sequential unit) ----
    reg [4:0]  step;
    reg [SZW-1:0] cg, og, cw;
    reg [SZW:0] rem0, rem1;
    reg [CW-1:0] oh, ow, ph, pw, ohc, owc;
    reg [KB-1:0] khw, kk;                 // with big_kk: exact below 2**KB
    reg [LPW-1:0] hw;                     // with big_x: exact up to XDEPTH
    reg [YW-1:0] ychan;
    reg        big_kk, big_w, big_x;
    reg [LENW-1:0] xgrp;                  // <= XDEPTH * PE_IN bytes unless big_x
    reg [OFW-1:0] ximg, yimg, woff, yoff;
    reg [SAW-1:0] rs, srs, prs, scw, pcw;

    reg           m_start, m_div;
    reg  [MW-1:0] m_a;
    reg  [SZW-1:0] m_b;
    wire [MW-1:0] m_q;
    /* verilator lint_off UNUSEDSIGNAL */  // the remainders are only compared with zero
    wire [SZW:0]  m_r;
    /* verilator lint_on UNUSEDSIGNAL */
    wire          m_busy;
    hal_int8_seqmath #(.AW(MW), .BW(SZW)) seqmath (
        .clk(clk), .rst(rst), .start(m_start), .is_div(m_div), .a(m_a), .b(m_b), .q(m_q),
        .r(m_r), .busy(m_busy));

    // ---- loop state ----
    reg [SZW-1:0] g, ocg, goc, oc0, b, st_p;
    reg [SZW-1:0] lanes;
    reg [OFW-1:0] xg_off;
    // running addresses: the image's input (xb_a), the image's (yimg_a) and the pooled row's
    // (yrow_a) output of the tile's first channel; wc_addr steps through the tile's channels
    reg [AW-1:0] xb_a, yimg_a, yrow_a;
    reg        xv;
    reg [SZW-1:0] xkb, xkg;
    reg [CW-1:0] oy, ox, rsub, csub, py, px, qq;
    reg signed [ICW-1:0] iy0, ix0, iy, ix;
    localparam signed [ICW-1:0] ONE = {{(ICW-1){1'b0}}, 1'b1};
    reg signed [SAW-1:0] rowbase, colbase, kyoff, kxoff;
    reg [SZW-1:0] ky, kx, icw;
    reg [SZW:0] ic0;
    reg [WAW-1:0] wk;

    // ---- per-lane parameters, accumulators, requantizers ----
    reg [31:0] p_bias [0:PE_OUT-1];
    reg [30:0] p_mult [0:PE_OUT-1];
    reg [5:0]  p_shift [0:PE_OUT-1];
    reg [PE_OUT-1:0] p_bad;               // mult < 0 or shift outside 1 .. 62
    reg [31:0] acc [0:PE_OUT-1];
    localparam integer NRQ = RQ == 0 || RQ > PE_OUT ? PE_OUT : RQ;
    reg  [SZW-1:0] rq_base;                  // first lane of the requantizers' current turn
    reg  [7:0]  rq_y [0:PE_OUT-1];        // requantized lanes
    wire [7:0]  rq_out [0:NRQ-1];
    wire [NRQ-1:0] rq_busy;

    // ---- AXI read / write engines ----
    reg  [AW-1:0] rc_addr, wc_addr;
    reg  [LENW-1:0] rc_len, wc_len;
    reg  [2:0]    kind;
    wire          rd_busy, rd_valid, wr_busy, wr_ready;
    wire [7:0]    rd_data;
    wire          rd_take = state == S_RDW && rd_valid;
    /* verilator lint_off UNUSEDSIGNAL */  // its low byte is shifted out when a word completes
    reg  [31:0]   word;
    /* verilator lint_on UNUSEDSIGNAL */
    reg  [1:0]    bi;
    reg  [SZW-1:0] li;    // lane being loaded
    reg  [7:0]    ld_q;    // channel in the word being loaded
    reg  [SZW-1:0] ld_w;  // channel word
    reg  [LPW-1:0] ld_pos;  // position (pixel or kernel tap)
    reg  [LPW-1:0] ld_a;    // bank address

    hal_int8_axi_rd #(.AW(AW), .LENW(LENW)) rd (
        .clk(clk), .rst(rst), .cmd_valid(state == S_RD), .cmd_addr(rc_addr), .cmd_len(rc_len),
        .busy(rd_busy), .out_valid(rd_valid), .out_data(rd_data), .out_ready(state == S_RDW),
        .m_arvalid(m_arvalid), .m_arready(m_arready), .m_araddr(m_araddr), .m_arlen(m_arlen),
        .m_arsize(m_arsize), .m_arburst(m_arburst), .m_rvalid(m_rvalid), .m_rready(m_rready),
        .m_rdata(m_rdata), .m_rlast(m_rlast));

    wire [7:0] st_byte;
    hal_int8_axi_wr #(.AW(AW), .LENW(LENW)) wr (
        .clk(clk), .rst(rst), .cmd_valid(state == S_WR), .cmd_addr(wc_addr), .cmd_len(wc_len),
        .busy(wr_busy), .in_valid(state == S_ST1), .in_data(st_byte), .in_ready(wr_ready),
        .m_awvalid(m_awvalid), .m_awready(m_awready), .m_awaddr(m_awaddr), .m_awlen(m_awlen),
        .m_awsize(m_awsize), .m_awburst(m_awburst), .m_wvalid(m_wvalid), .m_wready(m_wready),
        .m_wdata(m_wdata), .m_wstrb(m_wstrb), .m_wlast(m_wlast), .m_bvalid(m_bvalid),
        .m_bready(m_bready));

    // ---- banks ----
    // channel words as bank address terms (modulo the bank sizes)
    /* verilator lint_off UNUSEDSIGNAL */
    wire [SZW+SAW+WAW-1:0] icw_x = {{(SAW+WAW){1'b0}}, icw};
    wire [SZW+SAW+WAW-1:0] cw_x = {{(SAW+WAW){1'b0}}, cw};
    /* verilator lint_on UNUSEDSIGNAL */
    wire signed [SAW-1:0] x_addr_s = rowbase + colbase + kyoff + kxoff + $signed(icw_x[SAW-1:0]);
    wire [XAW-1:0] x_ra = x_addr_s[XAW-1:0];
    wire [WAW-1:0] w_ra = wk + icw_x[WAW-1:0];
    wire in_img = iy >= 0 && iy < $signed({3'd0, hs}) && ix >= 0 && ix < $signed({3'd0, ws});
    wire mac_issue = state == S_MAC;
    wire [7:0] xd [0:PE_IN-1];
    wire [7:0] wdat [0:PE_OUT*PE_IN-1];
    wire [7:0] od [0:PE_OUT-1];
    wire [OAW-1:0] o_ra = state == S_ST0 || state == S_ST1 ? qq[OAW-1:0] : px[OAW-1:0];
    wire o_first = ~|rsub && ~|csub;

    /* verilator lint_off UNUSEDSIGNAL */
    function automatic [AW-1:0] ext(input [63:0] v);  // cut to AW bits
        ext = v[AW-1:0];
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */

    /* verilator lint_off UNUSEDSIGNAL */
    function automatic [AW-1:0] wid(input [OFW-1:0] v);  // an offset as an address
        reg [63:0] t;
        begin
            t = {{(64-OFW){1'b0}}, v};
            wid = t[AW-1:0];
        end
    endfunction

    function automatic [OFW-1:0] ofs(input [63:0] v);  // a size as an offset
        ofs = v[OFW-1:0];
    endfunction

    function automatic [LPW-1:0] lp(input [63:0] v);  // a load position or bank address
        lp = v[LPW-1:0];
    endfunction

    function automatic [LENW-1:0] len(input [63:0] v);  // a command length (within LENW)
        len = v[LENW-1:0];
    endfunction

    // zero-extended to 64 bits, for the functions above
    function automatic [63:0] zs(input [SZW-1:0] v);
        zs = {{(64-SZW){1'b0}}, v};
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */

    genvar gp, gq;
    generate
        for (gq = 0; gq < PE_IN; gq = gq + 1) begin : xbank
            hal_int8_ram #(.WIDTH(8), .DEPTH(XDEPTH), .AW(XAW)) ram (
                .clk(clk), .we(rd_take && kind == K_X && ld_q == gq), .wa(ld_a[XAW-1:0]),
                .wd(rd_data), .ra(x_ra), .rd(xd[gq]));
        end
        for (gp = 0; gp < PE_OUT; gp = gp + 1) begin : lane
            for (gq = 0; gq < PE_IN; gq = gq + 1) begin : wbank
                hal_int8_ram #(.WIDTH(8), .DEPTH(WDEPTH), .AW(WAW)) ram (
                    .clk(clk), .we(rd_take && kind == K_W && li == gp && ld_q == gq),
                    .wa(ld_a[WAW-1:0]), .wd(rd_data), .ra(w_ra), .rd(wdat[gp * PE_IN + gq]));
            end
            wire signed [7:0] cur = $signed(od[gp]);
            wire signed [7:0] nxt = $signed(rq_y[gp]);
            hal_int8_ram #(.WIDTH(8), .DEPTH(OW_MAX), .AW(OAW)) obuf (
                .clk(clk), .we(state == S_UPD1), .wa(px[OAW-1:0]),
                .wd(o_first || nxt > cur ? rq_y[gp] : od[gp]), .ra(o_ra), .rd(od[gp]));
        end
        for (gp = 0; gp < NRQ; gp = gp + 1) begin : rqu
            wire [LW-1:0] l;
            if (NRQ == PE_OUT) begin : own
                assign l = gp;
            end else begin : shared
                /* verilator lint_off UNUSEDSIGNAL */  // below PE_OUT
                wire [SZW-1:0] rl = rq_base + gp[SZW-1:0];
                /* verilator lint_on UNUSEDSIGNAL */
                assign l = rl[LW-1:0];
            end
            hal_int8_requant #(.RADIX(RQ_RADIX)) rq (
                .clk(clk), .rst(rst), .start(state == S_RQ), .acc(acc[l]),
                .m(p_mult[l]), .s(p_shift[l]), .lo(lo12), .hi(hi12),
                .y(rq_out[gp]), .busy(rq_busy[gp]));
        end
    endgenerate
    assign st_byte = od[st_p[LW-1:0]];

    // ---- MAC array: read banks (cycle 1), multiply (cycle 2), accumulate (cycle 3) ----
    reg               v1, v2, in1;
    reg [PE_IN-1:0]   qok1, ok2;  // ok2: products that count (inside the image, real channels)
    reg signed [15:0] prod [0:PE_OUT*PE_IN-1];  // unconditional: the DSPs' output registers
    wire [SZW+1:0] cg_rem = {2'b00, cg} - {1'b0, ic0};
    integer i, j, i1, j1, i2, i3, j3;  // loop indices, one set per always block
    always @(posedge clk) begin
        v1 <= mac_issue;
        in1 <= in_img;
        for (j = 0; j < PE_IN; j = j + 1) begin
            qok1[j] <= $signed({{(30-SZW){cg_rem[SZW+1]}}, cg_rem}) > j;
            ok2[j] <= v1 && in1 && qok1[j];
        end
        v2 <= v1;
        for (i = 0; i < PE_OUT; i = i + 1)
            for (j = 0; j < PE_IN; j = j + 1)
                prod[i * PE_IN + j] <= $signed(xd[j]) * $signed(wdat[i * PE_IN + j]);
    end
    // |int8 * int8| <= 2**14, so PE_IN products sum in PSW bits
    localparam integer PSW = 17 + (PE_IN > 1 ? $clog2(PE_IN) : 0);
    reg [PSW-1:0] psum [0:PE_OUT-1];
    always @* begin
        for (i1 = 0; i1 < PE_OUT; i1 = i1 + 1) begin
            psum[i1] = {PSW{1'b0}};
            for (j1 = 0; j1 < PE_IN; j1 = j1 + 1)
                if (ok2[j1])
                    psum[i1] = psum[i1] + {{(PSW-16){prod[i1 * PE_IN + j1][15]}},
                                           prod[i1 * PE_IN + j1]};
        end
    end

    // ---- set-up step operands ----
    /* verilator lint_off UNUSEDSIGNAL */
    function automatic [MW-1:0] opa(input [63:0] v);  // an operand as MW bits
        opa = v[MW-1:0];
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */
    // h + 2 pad - kh, wd + 2 pad - kw: >= 0 and < 3 * 2**SZW once checked
    wire [CW-1:0] hk = {2'b00, hs} + {1'b0, pads, 1'b0} - {2'b00, khs};
    wire [CW-1:0] wk2 = {2'b00, ws} + {1'b0, pads, 1'b0} - {2'b00, kws};
    always @* begin
        m_div = 1'b0;
        m_a = {MW{1'b0}};
        m_b = {SZW{1'b0}};
        case (step)
            5'd0:  begin m_div = 1'b1; m_a = opa(zs(cs)); m_b = gs; end
            5'd1:  begin m_div = 1'b1; m_a = opa(zs(os)); m_b = gs; end
            5'd2:  begin m_div = 1'b1; m_a = opa({{(64-CW){1'b0}}, hk}); m_b = ss; end
            5'd3:  begin m_div = 1'b1; m_a = opa({{(64-CW){1'b0}}, wk2}); m_b = ss; end
            5'd4:  begin m_div = 1'b1; m_a = opa({{(64-CW){1'b0}}, oh}); m_b = pks; end
            5'd5:  begin m_div = 1'b1; m_a = opa({{(64-CW){1'b0}}, ow}); m_b = pks; end
            5'd6:  begin m_a = opa({{(64-CW){1'b0}}, ph}); m_b = pks; end
            5'd7:  begin m_a = opa({{(64-CW){1'b0}}, pw}); m_b = pks; end
            5'd8:  begin m_div = 1'b1; m_a = opa(zs(cg) + zs(PI) - 64'd1); m_b = PI; end
            5'd9:  begin m_a = opa(zs(khs)); m_b = kws; end
            5'd10: begin m_a = opa({{(64-KB){1'b0}}, khw}); m_b = cg; end
            5'd11: begin m_a = opa({{(64-KB){1'b0}}, khw}); m_b = cw; end
            5'd12: begin m_a = opa(zs(hs)); m_b = ws; end
            5'd13: begin m_a = opa({{(64-LPW){1'b0}}, hw}); m_b = cw; end
            5'd14: begin m_a = opa({{(64-LPW){1'b0}}, hw}); m_b = cg; end
            5'd15: begin m_a = opa({{(64-LPW){1'b0}}, hw}); m_b = cs; end
            5'd16: begin m_a = opa(zs(ws)); m_b = cw; end
            5'd17: begin m_a = opa({{(64-SAW){1'b0}}, rs}); m_b = ss; end
            5'd18: begin m_a = opa(zs(cw)); m_b = ss; end
            5'd19: begin m_a = opa({{(64-SAW){1'b0}}, rs}); m_b = pads; end
            5'd20: begin m_a = opa(zs(cw)); m_b = pads; end
            // pw < 2**SZW unless pw > OW_MAX (refused, ychan then unused)
            5'd21: begin m_a = opa({{(64-CW){1'b0}}, ph}); m_b = pw[SZW-1:0]; end
            5'd22: begin m_a = opa({{(64-YW){1'b0}}, ychan}); m_b = os; end
            5'd23: begin m_a = opa({{(64-KB){1'b0}}, kk}); m_b = oc0; end
            default: begin m_a = opa({{(64-YW){1'b0}}, ychan}); m_b = oc0; end
        endcase
    end

    /* verilator lint_off UNUSEDSIGNAL */
    function automatic over(input [31:0] v);  // v >= 2**SZW as uint32
        over = v[31:SZW] != {(32-SZW){1'b0}};
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */
    function automatic pos(input [31:0] v);  // v >= 1 as int32
        pos = !v[31] && v != 32'd0;
    endfunction
    wire big = over(r_n) || over(r_c) || over(r_o) ||
               conv && (over(r_h) || over(r_wd) || over(r_kh) || over(r_kw) || over(r_stride) ||
                        over(r_pad) || over(r_groups) || over(r_pool));
    wire signed [33:0] hp = $signed({2'b00, r_h}) + 2 * $signed({2'b00, r_pad});
    wire signed [33:0] wp = $signed({2'b00, r_wd}) + 2 * $signed({2'b00, r_pad});
    wire [SZW-1:0] og_left = og - ocg;
    // m_q > WD (step 11) or > XD (step 13); both are below 2**LPW
    wire [LPW-1:0] m_lim = step == 5'd11 ? WD[LPW-1:0] : XD[LPW-1:0];
    wire        m_over = m_q[MW-1:LPW] != {(MW-LPW){1'b0}} || m_q[LPW-1:0] > m_lim;
    wire [CW-1:0] pk_last = {2'b00, pks} - {{(CW-1){1'b0}}, 1'b1};  // pool window - 1
    reg  qbad;
    always @* begin
        qbad = 1'b0;
        for (i2 = 0; i2 < PE_OUT; i2 = i2 + 1)
            if (i2 < lanes && p_bad[i2]) qbad = 1'b1;
    end

    always @(posedge clk) begin
        done <= 1'b0;
        m_start <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            busy <= 1'b0;
            status <= 4'd0;
        end else begin
            // accumulators: bias at the start of a pixel, products once they arrive
            if (state == S_PIX && ox != owc)
                for (i3 = 0; i3 < PE_OUT; i3 = i3 + 1) acc[i3] <= p_bias[i3];
            else if (v2)
                for (i3 = 0; i3 < PE_OUT; i3 = i3 + 1) acc[i3] <= acc[i3] + {{(32-PSW){psum[i3][PSW-1]}}, psum[i3]};
            case (state)
                S_IDLE: if (start) begin
                    busy <= 1'b1;
                    rq_base <= {SZW{1'b0}};
                    lo12 <= lo12_in;
                    hi12 <= hi12_in;
                    status <= r_op > 32'd1 ? ERR_OP : 4'd0;
                    state <= r_op > 32'd1 ? S_FINISH : S_CHECK;
                end
                S_CHECK: begin
                    if (!pos(r_n) || !pos(r_c) || !pos(r_o) ||
                        conv && (!pos(r_h) || !pos(r_wd) || !pos(r_kh) || !pos(r_kw) ||
                                 !pos(r_stride) || r_pad[31] || r_pool[31] || !pos(r_groups) ||
                                 hp < $signed({2'b00, r_kh}) ||
                                 wp < $signed({2'b00, r_kw}))) begin
                        status <= ERR_SHAPE;
                        state <= S_FINISH;
                    end else if (big) begin
                        status <= ERR_LIMIT;
                        state <= S_FINISH;
                    end else begin
                        step <= 5'd0;
                        state <= S_MATH;
                    end
                end
                S_MATH: begin
                    m_start <= 1'b1;
                    state <= S_MATHW;
                end
                S_MATHW: if (!m_start && !m_busy) begin
                    case (step)
                        5'd0:  begin cg <= m_q[SZW-1:0]; rem0 <= m_r; end
                        5'd1:  begin og <= m_q[SZW-1:0]; rem1 <= m_r; end
                        5'd2:  oh <= m_q[CW-1:0] + {{(CW-1){1'b0}}, 1'b1};
                        5'd3:  ow <= m_q[CW-1:0] + {{(CW-1){1'b0}}, 1'b1};
                        5'd4:  ph <= m_q[CW-1:0];
                        5'd5:  pw <= m_q[CW-1:0];
                        5'd6:  ohc <= m_q[CW-1:0];
                        5'd7:  owc <= m_q[CW-1:0];
                        5'd8:  cw <= m_q[SZW-1:0];
                        // kh * kw and kk: exact below 2**KB, else refused (big_kk)
                        5'd9:  begin khw <= m_q[KB-1:0]; big_kk <= |m_q[MW-1:KB]; end
                        5'd10: begin kk <= m_q[KB-1:0]; big_kk <= big_kk || |m_q[MW-1:KB]; end
                        5'd11: big_w <= m_over;
                        5'd12: begin hw <= m_q[LPW-1:0]; big_x <= |m_q[MW-1:LPW]; end
                        5'd13: big_x <= big_x || m_over;
                        5'd14: xgrp <= m_q[LENW-1:0];
                        5'd15: ximg <= m_q[OFW-1:0];
                        5'd16: rs <= m_q[SAW-1:0];
                        5'd17: srs <= m_q[SAW-1:0];
                        5'd18: scw <= m_q[SAW-1:0];
                        5'd19: prs <= m_q[SAW-1:0];
                        5'd20: pcw <= m_q[SAW-1:0];
                        5'd21: ychan <= m_q[YW-1:0];
                        5'd22: yimg <= m_q[OFW-1:0];
                        5'd23: woff <= m_q[OFW-1:0];
                        default: yoff <= m_q[OFW-1:0];
                    endcase
                    step <= step + 5'd1;
                    state <= step == SETUP_LAST ? S_CHECK2 :
                             step == TILE_LAST ? S_TILE : S_MATH;
                end
                S_CHECK2: begin
                    if (|rem0 || |rem1 || ~|ph || ~|pw) begin
                        status <= ERR_SHAPE;
                        state <= S_FINISH;
                    end else if (big_kk || big_w || big_x || pw > OM || (!GRP && gs != S1)) begin
                        status <= ERR_LIMIT;
                        state <= S_FINISH;
                    end else begin
                        g <= {SZW{1'b0}};
                        ocg <= {SZW{1'b0}};
                        goc <= {SZW{1'b0}};
                        oc0 <= {SZW{1'b0}};
                        xg_off <= {OFW{1'b0}};
                        xv <= 1'b0;
                        lanes <= og < PO ? og : PO;
                        step <= TILE_FIRST;
                        state <= S_MATH;
                    end
                end
                S_TILE: begin  // woff, yoff known: load bias
                    rc_addr <= a_bias + ext(zs(oc0) << 2);
                    rc_len <= len(zs(lanes) << 2);
                    kind <= K_BIAS;
                    li <= {SZW{1'b0}};
                    bi <= 2'd0;
                    state <= S_RD;
                end
                S_RD: state <= S_RDW;
                S_RDW: begin
                    if (rd_valid) begin
                        if (kind == K_W || kind == K_X) begin
                            // next (channel, position): position runs fastest
                            ld_a <= ld_a + lp(zs(cw));
                            ld_pos <= ld_pos + 1'b1;
                            if (ld_pos == (kind == K_W ? lp({{(64-KB){1'b0}}, khw}) : hw) - 1'b1) begin
                                ld_pos <= {LPW{1'b0}};
                                if (ld_q == PI8 - 8'd1) begin
                                    ld_q <= 8'd0;
                                    ld_w <= ld_w + 1'b1;
                                    ld_a <= lp(zs(ld_w)) + 1'b1;
                                end else begin
                                    ld_q <= ld_q + 8'd1;
                                    ld_a <= lp(zs(ld_w));
                                end
                            end
                        end else begin
                            word <= {rd_data, word[31:8]};
                            bi <= bi + 2'd1;
                            if (bi == 2'd3) begin
                                li <= li + 1'b1;
                                for (i3 = 0; i3 < PE_OUT; i3 = i3 + 1)
                                    if ({{(32-SZW){1'b0}}, li} == i3) begin
                                        if (kind == K_BIAS) p_bias[i3] <= {rd_data, word[31:8]};
                                        if (kind == K_MULT) begin
                                            p_mult[i3] <= {rd_data[6:0], word[31:8]};
                                            p_bad[i3] <= rd_data[7];
                                        end
                                        if (kind == K_SHIFT) begin
                                            p_shift[i3] <= word[13:8];
                                            if (rd_data != 8'd0 || word[31:14] != 18'd0 ||
                                                word[13:8] == 6'd0 || word[13:8] == 6'd63)
                                                p_bad[i3] <= 1'b1;
                                        end
                                    end
                            end
                        end
                    end else if (!rd_busy) begin
                        ld_q <= 8'd0;
                        ld_w <= {SZW{1'b0}};
                        ld_pos <= {LPW{1'b0}};
                        ld_a <= {LPW{1'b0}};
                        li <= kind == K_W ? li + 1'b1 : {SZW{1'b0}};
                        case (kind)
                            K_BIAS: begin
                                rc_addr <= a_mult + ext(zs(oc0) << 2);
                                kind <= K_MULT;
                                state <= S_RD;
                            end
                            K_MULT: begin
                                rc_addr <= a_shift + ext(zs(oc0) << 2);
                                kind <= K_SHIFT;
                                state <= S_RD;
                            end
                            K_SHIFT: state <= S_QCHK;
                            K_W: begin
                                rc_addr <= rc_addr + ext({{(64-KB){1'b0}}, kk});
                                state <= li + 1'b1 == lanes ? S_IMG : S_RD;
                            end
                            default: begin  // K_X
                                xv <= 1'b1;
                                xkb <= b;
                                xkg <= g;
                                state <= S_ROW;
                            end
                        endcase
                    end
                end
                S_QCHK: begin
                    if (qbad) begin
                        status <= ERR_QPARAM;
                        state <= S_FINISH;
                    end else begin
                        rc_addr <= a_w + wid(woff);
                        rc_len <= len({{(64-KB){1'b0}}, kk});
                        kind <= K_W;
                        li <= {SZW{1'b0}};
                        state <= S_RD;
                    end
                    b <= {SZW{1'b0}};
                    xb_a <= a_x + (GRP ? wid(xg_off) : {AW{1'b0}});
                    yimg_a <= a_y + wid(yoff);
                end
                S_IMG: begin
                    oy <= {CW{1'b0}};
                    rsub <= {CW{1'b0}};
                    py <= {CW{1'b0}};
                    yrow_a <= yimg_a;
                    iy0 <= -$signed({3'b000, pads});
                    rowbase <= -$signed(prs);
                    if (b == ns) begin
                        state <= S_NEXTTILE;
                    end else if (xv && xkb == b && (!GRP || xkg == g)) begin
                        state <= S_ROW;
                    end else begin
                        rc_addr <= xb_a;
                        rc_len <= len({{(64-LENW){1'b0}}, xgrp});
                        kind <= K_X;
                        state <= S_RD;
                    end
                end
                S_ROW: begin
                    ox <= {CW{1'b0}};
                    csub <= {CW{1'b0}};
                    px <= {CW{1'b0}};
                    ix0 <= -$signed({3'b000, pads});
                    colbase <= -$signed(pcw);
                    if (oy == ohc) begin
                        b <= b + 1'b1;
                        xb_a <= xb_a + wid(ximg);
                        yimg_a <= yimg_a + wid(yimg);
                        state <= S_IMG;
                    end else begin
                        state <= S_PIX;
                    end
                end
                S_PIX: begin
                    ky <= {SZW{1'b0}};
                    kx <= {SZW{1'b0}};
                    icw <= {SZW{1'b0}};
                    ic0 <= {(SZW+1){1'b0}};
                    wk <= {WAW{1'b0}};
                    kyoff <= {SAW{1'b0}};
                    kxoff <= {SAW{1'b0}};
                    iy <= iy0;
                    ix <= ix0;
                    if (ox == owc) begin
                        st_p <= {SZW{1'b0}};
                        wc_addr <= yrow_a;
                        state <= rsub == pk_last ? S_STORE : S_NEXTROW;
                    end else begin
                        state <= S_MAC;
                    end
                end
                S_MAC: begin
                    icw <= icw + 1'b1;
                    ic0 <= ic0 + {1'b0, PI};
                    if (icw == cw - 1'b1) begin
                        icw <= {SZW{1'b0}};
                        ic0 <= {(SZW+1){1'b0}};
                        kx <= kx + 1'b1;
                        kxoff <= kxoff + $signed(cw_x[SAW-1:0]);
                        wk <= wk + cw_x[WAW-1:0];
                        ix <= ix + ONE;
                        if (kx == kws - 1'b1) begin
                            kx <= {SZW{1'b0}};
                            kxoff <= {SAW{1'b0}};
                            ix <= ix0;
                            ky <= ky + 1'b1;
                            kyoff <= kyoff + rs;
                            iy <= iy + ONE;
                            if (ky == khs - 1'b1) state <= S_D1;
                        end
                    end
                end
                S_D1: state <= S_D2;
                S_D2: state <= S_RQ;
                S_RQ: state <= S_RQW;
                S_RQW: if (rq_busy == {NRQ{1'b0}}) begin
                    for (i3 = 0; i3 < PE_OUT; i3 = i3 + 1)
                        for (j3 = 0; j3 < NRQ; j3 = j3 + 1)
                            if ({{(32-SZW){1'b0}}, rq_base} + j3 == i3) rq_y[i3] <= rq_out[j3];
                    if (rq_base + NRQ[SZW-1:0] >= lanes) begin
                        rq_base <= {SZW{1'b0}};
                        state <= S_UPD0;
                    end else begin
                        rq_base <= rq_base + NRQ[SZW-1:0];
                        state <= S_RQ;
                    end
                end
                S_UPD0: state <= S_UPD1;
                S_UPD1: begin
                    ox <= ox + 1'b1;
                    ix0 <= ix0 + $signed({3'b000, ss});
                    colbase <= colbase + scw;
                    csub <= csub + 1'b1;
                    if (csub == pk_last) begin
                        csub <= {CW{1'b0}};
                        px <= px + 1'b1;
                    end
                    state <= S_PIX;
                end
                S_STORE: begin
                    if (st_p == lanes) begin
                        state <= S_NEXTROW;
                    end else begin
                        wc_len <= len({{(64-CW){1'b0}}, pw});
                        qq <= {CW{1'b0}};
                        state <= S_WR;
                    end
                end
                S_WR: state <= S_ST0;
                S_ST0: state <= S_ST1;
                S_ST1: if (wr_ready) begin
                    qq <= qq + 1'b1;
                    state <= qq == pw - 1'b1 ? S_STW : S_ST0;
                end
                S_STW: if (!wr_busy) begin
                    st_p <= st_p + 1'b1;
                    wc_addr <= wc_addr + ext({{(64-YW){1'b0}}, ychan});
                    state <= S_STORE;
                end
                S_NEXTROW: begin
                    oy <= oy + 1'b1;
                    iy0 <= iy0 + $signed({3'b000, ss});
                    rowbase <= rowbase + srs;
                    rsub <= rsub + 1'b1;
                    if (rsub == pk_last) begin
                        rsub <= {CW{1'b0}};
                        py <= py + 1'b1;
                        yrow_a <= yrow_a + ext({{(64-CW){1'b0}}, pw});
                    end
                    state <= S_ROW;
                end
                S_NEXTTILE: begin
                    if ({1'b0, ocg} + {1'b0, PO} < {1'b0, og}) begin
                        ocg <= ocg + PO;
                        oc0 <= oc0 + PO;
                        lanes <= og_left - PO < PO ? og_left - PO : PO;
                        step <= TILE_FIRST;
                        state <= S_MATH;
                    end else if (!GRP || g + 1'b1 == gs) begin
                        state <= S_FINISH;
                    end else begin
                        g <= g + 1'b1;
                        ocg <= {SZW{1'b0}};
                        goc <= goc + og;
                        oc0 <= goc + og;
                        xg_off <= xg_off + ofs({{(64-LENW){1'b0}}, xgrp});
                        lanes <= og < PO ? og : PO;
                        step <= TILE_FIRST;
                        state <= S_MATH;
                    end
                end
                default: begin  // S_FINISH
                    busy <= 1'b0;
                    done <= 1'b1;
                    state <= S_IDLE;
                end
            endcase
        end
    end
endmodule
`default_nettype wire
