// fqsr_conv_tb.v: checks fqsr_conv_unit against one conv of a golden vector set, for one
// stimulus, with Icarus Verilog or Verilator 5 (`make verilate`: much faster on large
// layers). Verilog-2005.
//
// The conv's parameters come from the per-op header the vectors generator writes,
// <set>/<stimulus>/<conv>.svh, included as "fqsr_params.svh" (copy it or point -I at a
// directory holding it under that name); every file name in it is relative to the set
// directory, so run the simulation there. tools/hdl/Makefile does both:
//     make -C tools/hdl SET=vectors/corner_x2_4-4-8 STIMULUS=natural CONV=blocks.0.conv1
// (SET absolute, relative to the repository root, or relative to tools/hdl).
// Defines: FQSR_POP_HEX "<stimulus>/<conv>.plane.pop.hex" also checks the plane partials
// (element n = 0, o = 0, y = H / 2, x = W / 2); FQSR_TIE_HALF_AWAY builds the requantizer
// with a wrong tie rule (the corner sets must then FAIL); FQSR_FROM_NHWC reads the codes as
// packed words instead of bit planes (below). FQSR_W_ROM "<path>" with FQSR_ROM_SIMD S (>= CIN)
// takes each tap's weight planes straight from the ROM image <conv>.w.f<S>.mem of a stream
// directory (vectors --stream; one word a tap, bit m S + c), and FQSR_CONST_ROM "<path>" the
// biases from <conv>.const.mem, whose MULT .. COUT words must equal this header's
// (`make W_ROM=<stream dir>`).
//
// It reads the input and weight codes as SPEC 6.7 bit-plane words (IN_PLANES_MEM,
// W_PLANES_MEM; with FQSR_FROM_NHWC one pixel's channels a word, IN_NHWC_MEM, and one tap's
// channels a word, W_OHWI_MEM, split into planes here), the biases (B_MEM) and the expected
// accumulators and codes (ACC_MEM, OUT_MEM, NCHW at their own widths); it drives K*K taps
// per output element (0 for a padded tap) and compares every accumulator and code. Last
// line: "fqsr_conv_tb: PASS ..." or "fqsr_conv_tb: FAIL ..." (the first mismatches above it).
module fqsr_conv_tb;
`include "fqsr_params.svh"

`ifdef FQSR_TIE_HALF_AWAY
    localparam ROUNDING = 1;
`else
    localparam ROUNDING = 0;
`endif
    localparam ACC_W = ACC_BITS;
    localparam POP_W = $clog2(FAN_IN + 1);
    localparam PIXELS = BATCH * H_IN * W_IN;
    localparam OUTPUTS = BATCH * COUT * H_OUT * W_OUT;
    localparam PAIRS = IN_BITS * W_BITS;
    localparam WORDS = (CIN + 63) / 64;        // 64-bit plane words per pixel or tap
    localparam SHOW = 5;                       // mismatches listed

`ifdef FQSR_FROM_NHWC
    reg [CIN*IN_BITS-1:0] in_mem [0:PIXELS-1];
    reg [CIN*W_BITS-1:0]  w_mem  [0:COUT*K*K-1];
`else
    reg [63:0]            in_mem [0:IN_BITS*PIXELS*WORDS-1];
    reg [63:0]            w_mem  [0:W_BITS*COUT*K*K*WORDS-1];
`endif
    reg [31:0]            b_mem  [0:COUT-1];
    reg [ACC_BITS-1:0]    acc_mem [0:OUTPUTS-1];
    reg [OUT_BITS-1:0]    out_mem [0:OUTPUTS-1];
    reg [31:0]            pop_mem [0:PAIRS-1];
`ifdef FQSR_W_ROM
    reg [W_BITS*`FQSR_ROM_SIMD-1:0] rom_w [0:COUT*K*K-1];
`endif
`ifdef FQSR_CONST_ROM
    reg [31:0]            rom_c [0:8+COUT-1];
    reg [31:0]            header_c [0:7];
`endif
    integer rom_bad = 0;

    reg clk = 0;
    always #5 clk = ~clk;

    reg start = 0, valid = 0;
    reg signed [ACC_W-1:0] bias = 0;
    reg [WORDS*64-1:0] words;
    reg [IN_BITS*CIN-1:0] next_a, a_planes = 0;
    reg [W_BITS*CIN-1:0] next_b, b_planes = 0;
    wire signed [ACC_W-1:0] acc;
    wire [PAIRS*POP_W-1:0] pops;
    wire [OUT_BITS-1:0] code;

    fqsr_conv_unit #(.CIN(CIN), .A_BITS(IN_BITS), .A_SIGNED(IN_SIGNED), .B_BITS(W_BITS), .B_SIGNED(W_SIGNED),
                     .ACC_W(ACC_W), .POP_W(POP_W), .OUT_BITS(OUT_BITS), .QMIN(QMIN), .QMAX(QMAX),
                     .ROUNDING(ROUNDING))
        dut (.clk(clk), .start(start), .bias(bias), .valid(valid), .a_planes(a_planes), .b_planes(b_planes),
             .mult(MULT[30:0]), .rshift(RIGHT_SHIFT[5:0]), .neg_mult(NEG_MULT[30:0]),
             .neg_rshift(NEG_RIGHT_SHIFT[5:0]), .neg_negate(NEG_SIGN < 0),
             .acc(acc), .pops(pops), .code(code));

    integer n, o, oy, ox, ky, kx, iy, ix, idx, pair, m, c, w;
    integer acc_bad, code_bad, pop_bad, pops_checked;

    // a_planes and b_planes of one tap: pixel `pixel` (flat n, y, x) and tap `tap` (flat o, ky, kx)
    task set_tap;
        input padded;
        input integer pixel, tap;
        begin
`ifdef FQSR_FROM_NHWC
            for (m = 0; m < IN_BITS; m = m + 1)
                for (c = 0; c < CIN; c = c + 1)
                    next_a[m * CIN + c] = padded ? 1'b0 : in_mem[pixel][c * IN_BITS + m];
            for (m = 0; m < W_BITS; m = m + 1)
                for (c = 0; c < CIN; c = c + 1)
                    next_b[m * CIN + c] = w_mem[tap][c * W_BITS + m];
`else
            for (m = 0; m < IN_BITS; m = m + 1) begin
                for (w = 0; w < WORDS; w = w + 1)
                    words[w * 64 +: 64] = padded ? 64'd0 : in_mem[(m * PIXELS + pixel) * WORDS + w];
                next_a[m * CIN +: CIN] = words[CIN-1:0];
            end
            for (m = 0; m < W_BITS; m = m + 1) begin
                for (w = 0; w < WORDS; w = w + 1)
                    words[w * 64 +: 64] = w_mem[(m * COUT * K * K + tap) * WORDS + w];
                next_b[m * CIN +: CIN] = words[CIN-1:0];
            end
`endif
`ifdef FQSR_W_ROM
            for (m = 0; m < W_BITS; m = m + 1)
                for (c = 0; c < CIN; c = c + 1)
                    next_b[m * CIN + c] = rom_w[tap][m * `FQSR_ROM_SIMD + c];
`endif
        end
    endtask

    initial begin
`ifdef FQSR_FROM_NHWC
        $readmemh(IN_NHWC_MEM, in_mem);
        $readmemh(W_OHWI_MEM, w_mem);
`else
        $readmemh(IN_PLANES_MEM, in_mem);
        $readmemh(W_PLANES_MEM, w_mem);
`endif
        $readmemh(B_MEM, b_mem);
        $readmemh(ACC_MEM, acc_mem);
        $readmemh(OUT_MEM, out_mem);
`ifdef FQSR_POP_HEX
        $readmemh(`FQSR_POP_HEX, pop_mem);
`endif
`ifdef FQSR_W_ROM
        if (CIN > `FQSR_ROM_SIMD) begin
            rom_bad = rom_bad + 1;
            $display("mismatch: CIN %0d does not fit one ROM word of %0d channels (a stream written with --simd >= CIN)",
                     CIN, `FQSR_ROM_SIMD);
        end
        $readmemh(`FQSR_W_ROM, rom_w);
        $display("note: weight planes from %0s", `FQSR_W_ROM);
`endif
`ifdef FQSR_CONST_ROM
        $readmemh(`FQSR_CONST_ROM, rom_c);
        $display("note: biases from %0s", `FQSR_CONST_ROM);
        header_c[0] = MULT; header_c[1] = RIGHT_SHIFT; header_c[2] = NEG_MULT; header_c[3] = NEG_RIGHT_SHIFT;
        header_c[4] = NEG_SIGN; header_c[5] = QMIN; header_c[6] = QMAX; header_c[7] = COUT;
        for (w = 0; w < 8; w = w + 1)
            if (rom_c[w] !== header_c[w]) begin
                rom_bad = rom_bad + 1;
                $display("mismatch: constant ROM word %0d expected %h got %h", w, header_c[w], rom_c[w]);
            end
        for (o = 0; o < COUT; o = o + 1) b_mem[o] = rom_c[8 + o];
`endif
        acc_bad = 0; code_bad = 0; pop_bad = 0; pops_checked = 0;
        for (n = 0; n < BATCH; n = n + 1)
            for (o = 0; o < COUT; o = o + 1)
                for (oy = 0; oy < H_OUT; oy = oy + 1)
                    for (ox = 0; ox < W_OUT; ox = ox + 1) begin
                        // one output element: load the bias, then K*K taps
                        @(negedge clk);
                        start = 1;
                        for (w = 0; w < ACC_W; w = w + 1) bias[w] = b_mem[o][(w < 32) ? w : 31];   // sign-extend or cut
                        @(negedge clk);
                        start = 0; valid = 1;
                        for (ky = 0; ky < K; ky = ky + 1)
                            for (kx = 0; kx < K; kx = kx + 1) begin
                                iy = oy + ky - PAD;
                                ix = ox + kx - PAD;
                                set_tap(iy < 0 || iy >= H_IN || ix < 0 || ix >= W_IN,
                                        (n * H_IN + iy) * W_IN + ix, (o * K + ky) * K + kx);
                                // here, not in the task: Verilator 5.006 misses a task's writes to the unit's inputs
                                a_planes = next_a;
                                b_planes = next_b;
                                @(negedge clk);
                            end
                        valid = 0;
                        idx = ((n * COUT + o) * H_OUT + oy) * W_OUT + ox;
                        if (acc !== $signed(acc_mem[idx])) begin
                            acc_bad = acc_bad + 1;
                            if (acc_bad + code_bad <= SHOW)
                                $display("mismatch: accumulator [n=%0d o=%0d y=%0d x=%0d] expected %0d got %0d",
                                         n, o, oy, ox, $signed(acc_mem[idx]), acc);
                        end
                        if (code !== out_mem[idx]) begin
                            code_bad = code_bad + 1;
                            if (acc_bad + code_bad <= SHOW)
                                $display("mismatch: code [n=%0d o=%0d y=%0d x=%0d] of accumulator %0d: expected %h got %h",
                                         n, o, oy, ox, acc, out_mem[idx], code);
                        end
`ifdef FQSR_POP_HEX
                        if (n == 0 && o == 0 && oy == H_OUT / 2 && ox == W_OUT / 2)
                            for (pair = 0; pair < PAIRS; pair = pair + 1) begin
                                pops_checked = pops_checked + 1;
                                if (pops[pair * POP_W +: POP_W] !== pop_mem[pair][POP_W-1:0]
                                    || pop_mem[pair] >= (1 << POP_W)) begin
                                    pop_bad = pop_bad + 1;
                                    $display("mismatch: plane partial P[%0d, %0d] expected %0d got %0d",
                                             pair / W_BITS, pair % W_BITS, pop_mem[pair],
                                             pops[pair * POP_W +: POP_W]);
                                end
                            end
`endif
                    end
        if (acc_bad + code_bad + pop_bad + rom_bad == 0)
            $display("fqsr_conv_tb: PASS %0d accumulators, %0d codes, %0d plane partials (%0d x %0d x %0dx%0d, %0d-bit x %0d-bit)",
                     OUTPUTS, OUTPUTS, pops_checked, BATCH, COUT, H_OUT, W_OUT, IN_BITS, W_BITS);
        else
            $display("fqsr_conv_tb: FAIL %0d of %0d accumulators, %0d of %0d codes, %0d of %0d plane partials differ",
                     acc_bad, OUTPUTS, code_bad, OUTPUTS, pop_bad, pops_checked);
        $finish;
    end
endmodule
