// fqsr_stream_conv.v: a streaming K x K convolution (stride 1, zero padding K/2), Verilog-2005,
// synthesizable style apart from the ROM initialisation ($readmemh of the stream directory's
// images), lint-clean under verilator --lint-only -Wall. Build it with fqsr_bitplane_mac.v and
// fqsr_requantizer.v. A reference for checking, not a tuned engine.
//
// Input: beats of SIMD lanes of IN_BITS codes (vectors/README.md, "Stream-order vectors": raster
// order n, y, x, channel group; TUSER/TLAST travel beside the data and are not needed: the unit
// counts positions). Output: beats of PE lanes of OUT_BITS codes in the same order, TUSER on the
// first beat of a frame, TLAST on the last beat of a line, and beside them `m_acc`, the PE
// accumulators (ACC_W bits a lane, exact: the kit's ACC_BITS) the codes were requantized from.
// Lanes past CIN must carry 0; lanes past COUT carry 0 (codes and accumulators).
//
// Storage: a ring of K rows of W x G_IN words (G_IN = ceil(CIN / SIMD)): the K - 1 line buffers
// of the rows above and the row being written. Input row y goes into slot y mod K; it may be
// written once the output row y - K + PAD (the last that needs the row it replaces) is done, so
// the input runs at most PAD rows ahead of the output. Output pixel (y, x) starts once input pixel
// (min(y + PAD, H - 1), min(x + PAD, W - 1)) has arrived (the dataflow of the skip FIFO depths in
// stream.json); a frame's input waits for the previous frame's output to finish. Taps outside the
// image read 0 (zero padding; a head with head_pad "mean", whose pad is a nonzero code, is not
// covered).
//
// Datapath: PE fqsr_bitplane_mac instances with CIN = SIMD, one per output lane; an output beat
// takes 1 cycle (bias), K K G_IN cycles (one tap group each: SIMD input codes as bit planes
// against the weight ROM word (o, ky, kx, g), the packing of weights/<conv>.w.f<SIMD>.mem) and
// one cycle into the output register (fqsr_requantizer: the PReLU's two multipliers from the
// constant ROM, weights/<conv>.const.mem: MULT, RIGHT_SHIFT, NEG_MULT, NEG_RIGHT_SHIFT, NEG_SIGN,
// then biases from word 8). QMIN/QMAX are parameters (the testbench checks them against the ROM).
module fqsr_stream_conv #(
    parameter CIN = 8,
    parameter COUT = 8,
    parameter K = 3,
    parameter H = 5,
    parameter W = 3,
    parameter SIMD = 4,
    parameter PE = 4,
    parameter IN_BITS = 4,
    parameter IN_SIGNED = 1,
    parameter W_BITS = 4,
    parameter W_SIGNED = 1,
    parameter ACC_W = 32,          // the conv's ACC_BITS
    parameter POP_W = 16,
    parameter OUT_BITS = 4,
    parameter integer QMIN = -7,
    parameter integer QMAX = 7,
    parameter ROUNDING = 0,        // 1: half away from zero (wrong; see fqsr_requantizer.v)
    parameter W_ROM_MEM = "weights/conv.w.f4.mem",
    parameter CONST_ROM_MEM = "weights/conv.const.mem"
) (
    input  wire                        clk,
    input  wire                        rst,
    input  wire [SIMD*IN_BITS-1:0]     s_tdata,
    input  wire                        s_tvalid,
    output wire                        s_tready,
    output reg  [PE*OUT_BITS-1:0]      m_tdata,
    output reg  [PE*ACC_W-1:0]         m_acc,
    output reg                         m_tuser,
    output reg                         m_tlast,
    output reg                         m_tvalid,
    input  wire                        m_tready
);
    localparam PAD = K / 2;
    localparam G_IN = (CIN + SIMD - 1) / SIMD;
    localparam G_OUT = (COUT + PE - 1) / PE;
    localparam LB_WORDS = K * W * G_IN;
    localparam W_WORDS = COUT * K * K * G_IN;
    localparam C_WORDS = 8 + COUT;
    localparam LB_AW = (LB_WORDS <= 1) ? 1 : $clog2(LB_WORDS);
    localparam W_AW = (W_WORDS <= 1) ? 1 : $clog2(W_WORDS);
    localparam C_AW = $clog2(C_WORDS);

    reg [SIMD*IN_BITS-1:0] lb [0:LB_WORDS-1];
    reg [SIMD*W_BITS-1:0] wrom [0:W_WORDS-1];
    reg [31:0] crom [0:C_WORDS-1];
    initial begin
        $readmemh(W_ROM_MEM, wrom);
        $readmemh(CONST_ROM_MEM, crom);
    end

    // a 32-bit ROM word as an ACC_W-bit value (sign-extended, or cut: the bias fits ACC_BITS)
    function [ACC_W-1:0] from_word;
        input [31:0] v;
        integer i;
        begin
            for (i = 0; i < ACC_W; i = i + 1) from_word[i] = v[(i < 32) ? i : 31];
        end
    endfunction

    // ---- input side: positions of the next beat, and the ring slot of its row ----
    integer in_y, in_x, in_g, in_slot;
    reg in_ahead;                  // the input finished a frame the output has not
    integer out_y, out_x;          // the output pixel being computed
    assign s_tready = !rst && !in_ahead && (in_y <= out_y + PAD);
    integer in_a;
    always @* in_a = (in_slot * W + in_x) * G_IN + in_g;
    wire [LB_AW-1:0] in_addr = in_a[LB_AW-1:0];

    // ---- output side ----
    localparam S_WAIT = 2'd0, S_BIAS = 2'd1, S_TAPS = 2'd2, S_OUT = 2'd3;
    reg [1:0] state;
    integer og, ky, kx, gi;        // output group, tap, input group
    integer need_y, need_x;
    reg pixel_ready;
    always @* begin
        need_y = (out_y + PAD < H) ? out_y + PAD : H - 1;
        need_x = (out_x + PAD < W) ? out_x + PAD : W - 1;
        pixel_ready = in_ahead || (in_y > need_y) || (in_y == need_y && in_x > need_x);
    end

    // the tap being read: input pixel (out_y + ky - PAD, out_x + kx - PAD), 0 outside the image
    integer iy, ix, rd_a, wbase;
    reg in_image;
    always @* begin
        iy = out_y + ky - PAD;
        ix = out_x + kx - PAD;
        in_image = iy >= 0 && iy < H && ix >= 0 && ix < W;
        rd_a = in_image ? ((((iy % K) + K) % K) * W + ix) * G_IN + gi : 0;
        wbase = ((og * PE * K + ky) * K + kx) * G_IN + gi;   // word of output channel og PE, this tap
    end
    wire [LB_AW-1:0] rd_addr = rd_a[LB_AW-1:0];
    wire unused_addr_bits = ^{in_a[31:LB_AW], rd_a[31:LB_AW]};   // the addresses fit LB_AW bits
    wire [SIMD*IN_BITS-1:0] window_word = in_image ? lb[rd_addr] : {(SIMD*IN_BITS){1'b0}};
    // lane l's code bit m -> plane m bit l
    reg [IN_BITS*SIMD-1:0] a_planes;
    integer m, l;
    always @* begin
        for (m = 0; m < IN_BITS; m = m + 1)
            for (l = 0; l < SIMD; l = l + 1)
                a_planes[m*SIMD + l] = window_word[l*IN_BITS + m];
    end

    // the constants
    wire [31:0] c_mult = crom[0], c_rshift = crom[1], c_neg_mult = crom[2], c_neg_rshift = crom[3],
                c_neg_sign = crom[4];
    wire unused_consts = ^{c_mult[31], c_rshift[31:6], c_neg_mult[31], c_neg_rshift[31:6], c_neg_sign[30:0]};

    wire mac_start = (state == S_BIAS);
    wire mac_valid = (state == S_TAPS);
    wire [PE*ACC_W-1:0] accs;
    wire [PE*OUT_BITS-1:0] codes;
    wire [PE-1:0] lane_on;
    genvar p;
    generate
        for (p = 0; p < PE; p = p + 1) begin : lane
            integer o, wa, ca;
            always @* begin
                o = og * PE + p;
                wa = wbase + p * K * K * G_IN;
                ca = 8 + o;
            end
            assign lane_on[p] = (o < COUT);
            wire [W_AW-1:0] w_addr = wa[W_AW-1:0];
            wire [C_AW-1:0] c_addr = ca[C_AW-1:0];
            wire unused_rom_bits = ^{wa[31:W_AW], ca[31:C_AW]};   // the ROM addresses fit
            wire [SIMD*W_BITS-1:0] b_planes = (o < COUT) ? wrom[w_addr] : {(SIMD*W_BITS){1'b0}};
            wire [31:0] bias_word = (o < COUT) ? crom[c_addr] : 32'd0;
            wire signed [ACC_W-1:0] acc;
            wire [IN_BITS*W_BITS*POP_W-1:0] pops;
            wire unused_pops = ^pops;
            fqsr_bitplane_mac #(.CIN(SIMD), .A_BITS(IN_BITS), .A_SIGNED(IN_SIGNED), .B_BITS(W_BITS),
                                .B_SIGNED(W_SIGNED), .ACC_W(ACC_W), .POP_W(POP_W))
                mac (.clk(clk), .start(mac_start), .bias(from_word(bias_word)), .valid(mac_valid),
                     .a_planes(a_planes), .b_planes(b_planes), .acc(acc), .pops(pops));
            fqsr_requantizer #(.ACC_W(ACC_W), .OUT_BITS(OUT_BITS), .QMIN(QMIN), .QMAX(QMAX), .ROUNDING(ROUNDING))
                rq (.acc(acc), .mult(c_mult[30:0]), .rshift(c_rshift[5:0]), .neg_mult(c_neg_mult[30:0]),
                    .neg_rshift(c_neg_rshift[5:0]), .neg_negate(c_neg_sign[31]), .code(codes[p*OUT_BITS +: OUT_BITS]));
            assign accs[p*ACC_W +: ACC_W] = acc;
        end
    endgenerate
    // lanes past COUT: 0
    reg [PE*OUT_BITS-1:0] out_codes;
    reg [PE*ACC_W-1:0] out_accs;
    integer q;
    always @* begin
        for (q = 0; q < PE; q = q + 1) begin
            out_codes[q*OUT_BITS +: OUT_BITS] = lane_on[q] ? codes[q*OUT_BITS +: OUT_BITS] : {OUT_BITS{1'b0}};
            out_accs[q*ACC_W +: ACC_W] = lane_on[q] ? accs[q*ACC_W +: ACC_W] : {ACC_W{1'b0}};
        end
    end
    wire last_tap = (ky == K - 1) && (kx == K - 1) && (gi == G_IN - 1);
    wire out_free = !m_tvalid || m_tready;
    wire frame_done = (og == G_OUT - 1) && (out_x == W - 1) && (out_y == H - 1);

    always @(posedge clk) begin
        if (rst) begin
            in_y <= 0; in_x <= 0; in_g <= 0; in_slot <= 0; in_ahead <= 1'b0;
            out_y <= 0; out_x <= 0; og <= 0; ky <= 0; kx <= 0; gi <= 0;
            state <= S_WAIT;
            m_tvalid <= 1'b0;
            m_tdata <= {(PE*OUT_BITS){1'b0}};
            m_acc <= {(PE*ACC_W){1'b0}};
            m_tuser <= 1'b0;
            m_tlast <= 1'b0;
        end else begin
            // input: write the beat into the ring, advance (g, x, y)
            if (s_tvalid && s_tready) begin
                lb[in_addr] <= s_tdata;
                if (in_g != G_IN - 1) in_g <= in_g + 1;
                else begin
                    in_g <= 0;
                    if (in_x != W - 1) in_x <= in_x + 1;
                    else begin
                        in_x <= 0;
                        if (in_y != H - 1) begin
                            in_y <= in_y + 1;
                            in_slot <= (in_slot == K - 1) ? 0 : in_slot + 1;
                        end else begin
                            in_y <= 0;
                            in_slot <= 0;
                            in_ahead <= 1'b1;
                        end
                    end
                end
            end
            if (m_tvalid && m_tready) m_tvalid <= 1'b0;
            case (state)
                S_WAIT: if (pixel_ready) state <= S_BIAS;
                S_BIAS: state <= S_TAPS;
                S_TAPS: begin
                    if (gi != G_IN - 1) gi <= gi + 1;
                    else begin
                        gi <= 0;
                        if (kx != K - 1) kx <= kx + 1;
                        else begin
                            kx <= 0;
                            ky <= (ky == K - 1) ? 0 : ky + 1;
                        end
                    end
                    if (last_tap) state <= S_OUT;
                end
                default: if (out_free) begin   // S_OUT
                    m_tvalid <= 1'b1;
                    m_tdata <= out_codes;
                    m_acc <= out_accs;
                    m_tuser <= (og == 0) && (out_x == 0) && (out_y == 0);
                    m_tlast <= (og == G_OUT - 1) && (out_x == W - 1);
                    if (og != G_OUT - 1) begin
                        og <= og + 1;
                        state <= S_BIAS;
                    end else begin
                        og <= 0;
                        state <= S_WAIT;
                        if (out_x != W - 1) out_x <= out_x + 1;
                        else begin
                            out_x <= 0;
                            out_y <= (out_y == H - 1) ? 0 : out_y + 1;
                        end
                        if (frame_done) in_ahead <= 1'b0;
                    end
                end
            endcase
        end
    end
endmodule
