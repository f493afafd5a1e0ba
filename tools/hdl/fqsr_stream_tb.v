// fqsr_stream_tb.v: a streaming unit against the stream vectors of one op (`python -m
// fqsr_ref.vectors --stream SET --pe P --simd S --out DIR`), Icarus Verilog or Verilator 5.
// Include the op's <stimulus>/<op>.stream.svh as "fqsr_stream_params.svh" and run in the stream
// directory (file names are relative to it); `make -C tools/hdl stream-requant | stream-add |
// stream-shuffle`. The unit:
//   default           fqsr_stream_requant, a requant op: IN_STREAM_MEM codes -> OUT_STREAM_MEM
//   -DFQSR_STREAM_ACC fqsr_stream_requant as a conv's output stage: ACC_STREAM_MEM accumulators
//                     -> OUT_STREAM_MEM codes with the PReLU's two multipliers
//   -DFQSR_STREAM_ADD fqsr_stream_add: IN_STREAM_MEM (skip) and BR_STREAM_MEM (branch), each its
//                     own source -> OUT_STREAM_MEM
//   -DFQSR_STREAM_SHUFFLE  fqsr_stream_shuffle: IN_STREAM_MEM -> OUT_STREAM_MEM (beats reordered)
//   -DFQSR_STREAM_CONV  fqsr_stream_conv, a whole conv: IN_STREAM_MEM (SIMD lanes) -> OUT_STREAM_MEM
//                     codes, and every accumulator beat against ACC_STREAM_MEM; weights and
//                     constants from W_ROM_MEM / CONST_ROM_MEM (QMIN, QMAX checked against it)
//   -DFQSR_TIE_HALF_AWAY  a wrong tie rule (the corner sets must FAIL; requant, add and conv)
//   -DFQSR_SEED=n     the seed of the random gaps and backpressure (default 1)
// Each source drops TVALID on about 1 cycle in 3 and the sink TREADY on about 1 in 3 (xorshift32,
// one generator each, the same on every simulator); the scoreboard compares every output beat
// (data, TUSER, TLAST) with the golden beat of its index, whenever it arrives. Last line:
// "fqsr_stream_tb: PASS <beats> beats of <lanes> lanes, <cycles> cycles ..." (a conv: "... lanes,
// <beats> accumulator beats, <cycles> cycles ...") or
// "fqsr_stream_tb: FAIL ...".
module fqsr_stream_tb;
`include "fqsr_stream_params.svh"
`ifdef FQSR_TIE_HALF_AWAY
    localparam ROUNDING = 1;
`else
    localparam ROUNDING = 0;
`endif
`ifdef FQSR_SEED
    localparam [31:0] SEED = `FQSR_SEED;
`else
    localparam [31:0] SEED = 1;
`endif
`ifdef FQSR_STREAM_ACC
    localparam A_BITS = ACC_BITS, A_SIGNED = 1, A_BEATS = ACC_BEATS, A_WORD = ACC_WORD_BITS;
`else
    localparam A_BITS = IN_BITS, A_SIGNED = IN_SIGNED, A_BEATS = IN_BEATS, A_WORD = IN_WORD_BITS;
`endif
`ifdef FQSR_STREAM_ADD
    localparam B_BEATS = BR_BEATS, B_WORD = BR_WORD_BITS;   // the second source: the branch
`else
    localparam B_BEATS = 0, B_WORD = 1;                     // no second source
`endif
    localparam LANES = OUT_LANES;
`ifdef FQSR_STREAM_CONV
    localparam S_LANES = IN_LANES;     // a conv reads SIMD lanes
    localparam ACC_CHECK = 1;
    localparam C_BEATS = ACC_BEATS, C_WORD = ACC_WORD_BITS, C_BITS = ACC_BITS;
    localparam integer LIMIT = 20 * OUT_BEATS * (K * K * ((CIN + IN_LANES - 1) / IN_LANES) + 2) + 20 * IN_BEATS + 100;
`else
    localparam integer LIMIT = 20 * OUT_BEATS + 100;
    localparam S_LANES = OUT_LANES;
    localparam ACC_CHECK = 0;
    localparam C_BEATS = 1, C_WORD = 1, C_BITS = 1;
`endif
    localparam SHOW = 5;

    reg [A_WORD-1:0] in_mem [0:A_BEATS-1];
    reg [B_WORD-1:0] br_mem [0:(B_BEATS > 0 ? B_BEATS : 1)-1];
    reg [OUT_WORD_BITS-1:0] out_mem [0:OUT_BEATS-1];
    reg [C_WORD-1:0] acc_mem [0:C_BEATS-1];
    wire [LANES*C_BITS-1:0] m_acc;

    reg clk = 0, rst = 1;
    always #5 clk = ~clk;

    // xorshift32: one draw a cycle for each source and one for the sink
    reg [31:0] rs = SEED, rb = SEED ^ 32'h6a09e667, rk = SEED ^ 32'h9e3779b9;
    function [31:0] xorshift;
        input [31:0] x;
        reg [31:0] y;
        begin
            y = x ^ (x << 13);
            y = y ^ (y >> 17);
            xorshift = y ^ (y << 5);
        end
    endfunction

    integer sent = 0, sent_b = 0, got = 0, bad = 0, bad_acc = 0, cycles = 0, i;
    wire [A_WORD-1:0] beat = in_mem[(sent < A_BEATS) ? sent : 0];
    wire [B_WORD-1:0] beat_b = br_mem[(sent_b < B_BEATS) ? sent_b : 0];
    reg s_tvalid = 0, b_tvalid = 0, m_tready = 0;
    wire s_tready, b_tready, m_tvalid, m_tuser, m_tlast;
    wire [LANES*OUT_BITS-1:0] m_tdata;
    wire markers_differ;

`ifdef FQSR_STREAM_ADD
    fqsr_stream_add #(.LANES(LANES), .IN_BITS(IN_BITS), .IN_SIGNED(IN_SIGNED), .BR_BITS(BR_BITS),
                      .BR_SIGNED(BR_SIGNED), .OUT_BITS(OUT_BITS), .QMIN(QMIN), .QMAX(QMAX),
                      .MULT(MULT[30:0]), .BRANCH_MULT(BRANCH_MULT[30:0]), .RSHIFT(RIGHT_SHIFT[5:0]),
                      .BRANCH_RELU(BRANCH_RELU), .ROUNDING(ROUNDING))
        dut (.clk(clk), .rst(rst), .s_tdata(beat[LANES*IN_BITS-1:0]), .s_tuser(beat[LANES*IN_BITS]),
             .s_tlast(beat[LANES*IN_BITS+1]), .s_tvalid(s_tvalid), .s_tready(s_tready),
             .b_tdata(beat_b[LANES*BR_BITS-1:0]), .b_tuser(beat_b[LANES*BR_BITS]),
             .b_tlast(beat_b[LANES*BR_BITS+1]), .b_tvalid(b_tvalid), .b_tready(b_tready),
             .m_tdata(m_tdata), .m_tuser(m_tuser), .m_tlast(m_tlast), .m_tvalid(m_tvalid), .m_tready(m_tready),
             .m_markers_differ(markers_differ));
`elsif FQSR_STREAM_CONV
    fqsr_stream_conv #(.CIN(CIN), .COUT(COUT), .K(K), .H(H_IN), .W(W_IN), .SIMD(IN_LANES), .PE(OUT_LANES),
                       .IN_BITS(IN_BITS), .IN_SIGNED(IN_SIGNED), .W_BITS(W_BITS), .W_SIGNED(W_SIGNED),
                       .ACC_W(ACC_BITS), .OUT_BITS(OUT_BITS), .QMIN(QMIN), .QMAX(QMAX), .ROUNDING(ROUNDING),
                       .W_ROM_MEM(W_ROM_MEM), .CONST_ROM_MEM(CONST_ROM_MEM))
        dut (.clk(clk), .rst(rst), .s_tdata(beat[S_LANES*IN_BITS-1:0]), .s_tvalid(s_tvalid), .s_tready(s_tready),
             .m_tdata(m_tdata), .m_acc(m_acc), .m_tuser(m_tuser), .m_tlast(m_tlast), .m_tvalid(m_tvalid),
             .m_tready(m_tready));
    assign b_tready = 1'b0;
    assign markers_differ = 1'b0;
`elsif FQSR_STREAM_SHUFFLE
    fqsr_stream_shuffle #(.LANES(LANES), .BITS(IN_BITS), .CIN(CIN), .FACTOR(FACTOR), .W_IN(W_IN))
        dut (.clk(clk), .rst(rst), .s_tdata(beat[LANES*IN_BITS-1:0]), .s_tuser(beat[LANES*IN_BITS]),
             .s_tlast(beat[LANES*IN_BITS+1]), .s_tvalid(s_tvalid), .s_tready(s_tready),
             .m_tdata(m_tdata), .m_tuser(m_tuser), .m_tlast(m_tlast), .m_tvalid(m_tvalid), .m_tready(m_tready));
    assign b_tready = 1'b0;
    assign markers_differ = 1'b0;
`else
`ifdef FQSR_STREAM_ACC
    localparam [30:0] N_MULT = NEG_MULT[30:0];
    localparam [5:0] N_RSHIFT = NEG_RIGHT_SHIFT[5:0];
    localparam N_NEGATE = NEG_SIGN < 0;
`else
    localparam [30:0] N_MULT = MULT[30:0];
    localparam [5:0] N_RSHIFT = RIGHT_SHIFT[5:0];
    localparam N_NEGATE = 0;
`endif
    fqsr_stream_requant #(.LANES(LANES), .IN_BITS(A_BITS), .IN_SIGNED(A_SIGNED), .OUT_BITS(OUT_BITS),
                          .QMIN(QMIN), .QMAX(QMAX), .MULT(MULT[30:0]), .RSHIFT(RIGHT_SHIFT[5:0]),
                          .NEG_MULT(N_MULT), .NEG_RSHIFT(N_RSHIFT), .NEG_NEGATE(N_NEGATE), .ROUNDING(ROUNDING))
        dut (.clk(clk), .rst(rst), .s_tdata(beat[LANES*A_BITS-1:0]), .s_tuser(beat[LANES*A_BITS]),
             .s_tlast(beat[LANES*A_BITS+1]), .s_tvalid(s_tvalid), .s_tready(s_tready),
             .m_tdata(m_tdata), .m_tuser(m_tuser), .m_tlast(m_tlast), .m_tvalid(m_tvalid), .m_tready(m_tready));
    assign b_tready = 1'b0;
    assign markers_differ = 1'b0;
`endif

`ifndef FQSR_STREAM_CONV
    assign m_acc = {(LANES*C_BITS){1'b0}};
`endif

    // sources and sink: decide at the falling edge, hand over at the rising edge
    always @(negedge clk) if (!rst) begin
        rs = xorshift(rs);
        rb = xorshift(rb);
        rk = xorshift(rk);
        s_tvalid = (sent < A_BEATS) && (rs % 3 != 0);
        b_tvalid = (sent_b < B_BEATS) && (rb % 3 != 0);
        m_tready = (rk % 3 != 0);
    end
    always @(posedge clk) if (!rst) begin
        cycles = cycles + 1;
        if (s_tvalid && s_tready) sent = sent + 1;
        if (b_tvalid && b_tready) sent_b = sent_b + 1;
        if (m_tvalid && m_tready) begin
            if (got >= OUT_BEATS || {m_tlast, m_tuser, m_tdata} !== out_mem[got]) begin
                bad = bad + 1;
                if (bad <= SHOW)
                    $display("mismatch: beat %0d expected %h got %h", got, out_mem[got], {m_tlast, m_tuser, m_tdata});
            end
            if (ACC_CHECK && (got >= C_BEATS || m_acc !== acc_mem[got][LANES*C_BITS-1:0])) begin
                bad_acc = bad_acc + 1;
                if (bad_acc <= SHOW)
                    $display("mismatch: accumulator beat %0d expected %h got %h", got, acc_mem[got][LANES*C_BITS-1:0], m_acc);
            end
            got = got + 1;
        end
    end

    initial begin
`ifdef FQSR_STREAM_ACC
        $readmemh(ACC_STREAM_MEM, in_mem);
`else
        $readmemh(IN_STREAM_MEM, in_mem);
`endif
`ifdef FQSR_STREAM_ADD
        $readmemh(BR_STREAM_MEM, br_mem);
`endif
        $readmemh(OUT_STREAM_MEM, out_mem);
`ifdef FQSR_STREAM_CONV
        $readmemh(ACC_STREAM_MEM, acc_mem);
        @(negedge clk);
        if ($signed(dut.crom[5]) != QMIN || $signed(dut.crom[6]) != QMAX || dut.crom[7] != COUT) begin
            $display("fqsr_stream_tb: FAIL the constant ROM %s disagrees with the header (QMIN, QMAX, COUT)", CONST_ROM_MEM);
            $finish;
        end
`endif
        for (i = 0; i < 2; i = i + 1) @(negedge clk);
        rst = 0;
        while (got < OUT_BEATS && cycles < LIMIT) @(negedge clk);
        if (markers_differ)
            $display("mismatch: the branch's TUSER/TLAST differ from the skip's (the streams are out of step)");
        if (bad == 0 && bad_acc == 0 && !markers_differ && got == OUT_BEATS && sent == A_BEATS && sent_b == B_BEATS) begin
            if (ACC_CHECK)
                $display("fqsr_stream_tb: PASS %0d beats of %0d lanes, %0d accumulator beats, %0d cycles (random gaps and backpressure, seed %0d)",
                         got, LANES, got, cycles, SEED);
            else
                $display("fqsr_stream_tb: PASS %0d beats of %0d lanes, %0d cycles (random gaps and backpressure, seed %0d)",
                         got, LANES, cycles, SEED);
        end else if (ACC_CHECK)
            $display("fqsr_stream_tb: FAIL %0d of %0d beats differ, %0d of %0d accumulator beats differ, %0d received, %0d of %0d sent",
                     bad, OUT_BEATS, bad_acc, C_BEATS, got, sent + sent_b, A_BEATS + B_BEATS);
        else
            $display("fqsr_stream_tb: FAIL %0d of %0d beats differ, %0d received, %0d of %0d sent",
                     bad, OUT_BEATS, got, sent + sent_b, A_BEATS + B_BEATS);
        $finish;
    end
endmodule
