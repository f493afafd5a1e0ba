// fqsr_conv_unit.v: an example bit-plane convolution datapath and requantizer for the
// fqsr_ref golden vectors, Verilog-2005, synthesizable style (no delays, no system tasks),
// lint-clean under verilator --lint-only -Wall. Build it with fqsr_bitplane_mac.v and
// fqsr_requantizer.v.
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
// `code` is the OUT_BITS two's complement pattern of the result. `bias` is ACC_W bits wide
// (the kit's 32-bit bias sign-extended or cut: it fits, ACC_BOUND includes it).
module fqsr_conv_unit #(
    parameter CIN = 16,
    parameter A_BITS = 4,
    parameter A_SIGNED = 1,
    parameter B_BITS = 4,
    parameter B_SIGNED = 1,
    parameter ACC_W = 32,
    parameter POP_W = 16,
    parameter OUT_BITS = 8,
    parameter integer QMIN = -127,
    parameter integer QMAX = 127,
    parameter ROUNDING = 0
) (
    input  wire                            clk,
    input  wire                            start,
    input  wire signed [ACC_W-1:0]         bias,
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
