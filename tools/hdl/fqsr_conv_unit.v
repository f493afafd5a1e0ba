// fqsr_conv_unit.v: an example bit-plane convolution datapath and requantizer for the
// fqsr_ref golden vectors, Verilog-2005, synthesizable style (no delays, no system tasks).
//
// One output element per accumulation: `start` loads the bias, then every `valid`
// cycle takes one tap of the window as bit planes: plane m of that pixel's CIN input codes
// (bit c = bit m of channel c's two's complement code; the pixel's words of
// <S>/<tensor>.planes.mem, or 0 for a padded tap) and plane p of the tap's CIN weight
// codes (weights/<conv>.w.planes.mem). After K*K taps `acc` is the accumulator and `code` its output
// code. SPEC 6.7 (Eq. 2): per plane pair (m, p) the tap adds
//     w_m * w_p * popcount(a_m AND b_p),   w_m = 2^m, but -2^(M-1) for a signed top plane,
// and `pops` keeps popcount sums per pair (the vectors' plane.pop), pair (m, p) in bits
// [(m B_BITS + p) POP_W, ... + POP_W).
// The requantizer (SPEC 6.4, 6.8 step 4): acc >= 0 uses (MULT, RSHIFT = 31 - SHIFT),
// acc < 0 uses (NEG_MULT, NEG_RSHIFT) on NEG_SIGN * acc; y = (x M + 2^(n-1)) >>> n
// (one rounding, ties toward +infinity), then a saturating clamp to [QMIN, QMAX].
// `code` is the OUT_BITS two's complement pattern of the result.

// popcount sums and weighted accumulation of the plane pairs
module fqsr_bitplane_mac #(
    parameter CIN = 16,            // at most 256
    parameter A_BITS = 4,          // input codes (row)
    parameter A_SIGNED = 1,
    parameter B_BITS = 4,          // weight codes (column)
    parameter B_SIGNED = 1,
    parameter ACC_W = 32,          // accumulator width, at least ACC_BITS of the conv
    parameter POP_W = 16           // one plane pair's popcount sum: log2(FAN_IN + 1) bits
) (
    input  wire                            clk,
    input  wire                            start,     // acc <= bias, pops <= 0
    input  wire signed [31:0]              bias,
    input  wire                            valid,     // add one tap
    input  wire [A_BITS*CIN-1:0]           a_planes,  // plane m of the CIN inputs in bits [m CIN, (m+1) CIN)
    input  wire [B_BITS*CIN-1:0]           b_planes,  // plane p of the CIN weights likewise
    output reg  signed [ACC_W-1:0]         acc,
    output reg  [A_BITS*B_BITS*POP_W-1:0]  pops
);
    // popcount by a tree of pairwise sums (SWAR) on a power-of-two width
    localparam PW2 = (CIN <= 1) ? 2 : (1 << $clog2(CIN));
    function [255:0] pair_mask;    // bit i set where (i / s) is even
        input integer s;
        integer i;
        begin
            pair_mask = 0;
            for (i = 0; i < 256; i = i + 1)
                if ((i / s) % 2 == 0) pair_mask[i] = 1'b1;
        end
    endfunction
    localparam [255:0] M1 = pair_mask(1), M2 = pair_mask(2), M4 = pair_mask(4), M8 = pair_mask(8),
                       M16 = pair_mask(16), M32 = pair_mask(32), M64 = pair_mask(64), M128 = pair_mask(128);
    function [POP_W-1:0] popcount;
        input [CIN-1:0] v;
        reg [PW2-1:0] x;
        begin
            x = v;
            x = (x & M1[PW2-1:0]) + ((x >> 1) & M1[PW2-1:0]);
            if (PW2 > 2) x = (x & M2[PW2-1:0]) + ((x >> 2) & M2[PW2-1:0]);
            if (PW2 > 4) x = (x & M4[PW2-1:0]) + ((x >> 4) & M4[PW2-1:0]);
            if (PW2 > 8) x = (x & M8[PW2-1:0]) + ((x >> 8) & M8[PW2-1:0]);
            if (PW2 > 16) x = (x & M16[PW2-1:0]) + ((x >> 16) & M16[PW2-1:0]);
            if (PW2 > 32) x = (x & M32[PW2-1:0]) + ((x >> 32) & M32[PW2-1:0]);
            if (PW2 > 64) x = (x & M64[PW2-1:0]) + ((x >> 64) & M64[PW2-1:0]);
            if (PW2 > 128) x = (x & M128[PW2-1:0]) + ((x >> 128) & M128[PW2-1:0]);
            popcount = x;                 // at most CIN <= FAN_IN: fits POP_W
        end
    endfunction

    // the tap's contribution, and its popcounts per pair
    reg signed [ACC_W-1:0] tap_sum;
    reg [A_BITS*B_BITS*POP_W-1:0] tap_pops;
    reg [POP_W-1:0] count;
    reg signed [ACC_W-1:0] term;
    integer m, p;

    always @* begin
        tap_sum = 0;
        tap_pops = 0;
        for (m = 0; m < A_BITS; m = m + 1)
            for (p = 0; p < B_BITS; p = p + 1) begin
                // AND of plane m of the inputs and plane p of the weights, then popcount
                count = popcount(a_planes[m*CIN +: CIN] & b_planes[p*CIN +: CIN]);
                tap_pops[(m*B_BITS + p)*POP_W +: POP_W] = count;
                // shift-add: 2^(m+p), negated when exactly one plane is a signed top plane
                term = count;                 // zero-extended (or wrapped: the sum is mod 2^ACC_W)
                term = term <<< (m + p);
                if ((A_SIGNED && m == A_BITS - 1) != (B_SIGNED && p == B_BITS - 1))
                    tap_sum = tap_sum - term;
                else
                    tap_sum = tap_sum + term;
            end
    end

    integer i;
    always @(posedge clk) begin
        if (start) begin
            acc <= bias;                      // sign-extended to ACC_W
            pops <= 0;
        end else if (valid) begin
            acc <= acc + tap_sum;
            for (i = 0; i < A_BITS*B_BITS; i = i + 1)
                pops[i*POP_W +: POP_W] <= pops[i*POP_W +: POP_W] + tap_pops[i*POP_W +: POP_W];
        end
    end
endmodule

// acc -> output code: two multipliers (PReLU), single rounding half up, clamp
module fqsr_requantizer #(
    parameter ACC_W = 32,
    parameter OUT_BITS = 8,
    parameter signed [63:0] QMIN = -127,
    parameter signed [63:0] QMAX = 127,
    parameter ROUNDING = 0         // 0: SPEC 6.2 (half up); 1: half away from zero (a wrong
                                   // rule, TFLite's; for proving the testbench can fail)
) (
    input  wire signed [ACC_W-1:0]  acc,
    input  wire [30:0]              mult,        // M in [0, 2^31 - 1]
    input  wire [5:0]               rshift,      // n = 31 - SHIFT in [0, 62]
    input  wire [30:0]              neg_mult,
    input  wire [5:0]               neg_rshift,
    input  wire                     neg_negate,  // NEG_SIGN = -1
    output wire [OUT_BITS-1:0]      code
);
    localparam PW = ACC_W + 34;    // |x| M + 2^(n-1) with a sign and a guard bit
    wire neg = acc < 0;
    wire signed [PW-1:0] x = (neg && neg_negate) ? -$signed({{(PW-ACC_W){acc[ACC_W-1]}}, acc})
                                                 : $signed({{(PW-ACC_W){acc[ACC_W-1]}}, acc});
    wire [30:0] m = neg ? neg_mult : mult;
    wire [5:0] n = neg ? neg_rshift : rshift;
    wire signed [PW-1:0] prod = x * $signed({1'b0, m});
    wire signed [PW-1:0] half = (n == 0) ? 0 : ($signed({{(PW-1){1'b0}}, 1'b1}) <<< (n - 1));
    // half up: floor((p + 2^(n-1)) / 2^n); half away from zero rounds |p| and restores the sign
    wire signed [PW-1:0] up = (prod + half) >>> n;
    wire signed [PW-1:0] mag = ((prod < 0 ? -prod : prod) + half) >>> n;
    wire signed [PW-1:0] y = (ROUNDING == 1) ? (prod < 0 ? -mag : mag) : up;
    wire signed [PW-1:0] clamped = (y < QMIN) ? QMIN : ((y > QMAX) ? QMAX : y);
    assign code = clamped[OUT_BITS-1:0];
endmodule

// the two together: what the testbenches drive
module fqsr_conv_unit #(
    parameter CIN = 16,
    parameter A_BITS = 4,
    parameter A_SIGNED = 1,
    parameter B_BITS = 4,
    parameter B_SIGNED = 1,
    parameter ACC_W = 32,
    parameter POP_W = 16,
    parameter OUT_BITS = 8,
    parameter signed [63:0] QMIN = -127,
    parameter signed [63:0] QMAX = 127,
    parameter ROUNDING = 0
) (
    input  wire                            clk,
    input  wire                            start,
    input  wire signed [31:0]              bias,
    input  wire                            valid,
    input  wire [A_BITS*CIN-1:0]           a_planes,
    input  wire [B_BITS*CIN-1:0]           b_planes,
    input  wire [30:0]                     mult,
    input  wire [5:0]                      rshift,
    input  wire [30:0]                     neg_mult,
    input  wire [5:0]                      neg_rshift,
    input  wire                            neg_negate,
    output wire signed [ACC_W-1:0]         acc,
    output wire [A_BITS*B_BITS*POP_W-1:0]  pops,
    output wire [OUT_BITS-1:0]             code
);
    fqsr_bitplane_mac #(.CIN(CIN), .A_BITS(A_BITS), .A_SIGNED(A_SIGNED), .B_BITS(B_BITS),
                        .B_SIGNED(B_SIGNED), .ACC_W(ACC_W), .POP_W(POP_W))
        mac (.clk(clk), .start(start), .bias(bias), .valid(valid), .a_planes(a_planes), .b_planes(b_planes),
             .acc(acc), .pops(pops));
    fqsr_requantizer #(.ACC_W(ACC_W), .OUT_BITS(OUT_BITS), .QMIN(QMIN), .QMAX(QMAX), .ROUNDING(ROUNDING))
        rq (.acc(acc), .mult(mult), .rshift(rshift), .neg_mult(neg_mult), .neg_rshift(neg_rshift),
            .neg_negate(neg_negate), .code(code));
endmodule
