// fqsr_requantizer.v: a value -> an output code (SPEC 6.4, 6.8 step 4), Verilog-2005,
// combinational, synthesizable style; lint-clean under verilator --lint-only -Wall.
//
// acc >= 0 uses (mult, rshift = 31 - SHIFT); acc < 0 uses (neg_mult, neg_rshift) on
// NEG_SIGN * acc (neg_negate = NEG_SIGN < 0): the two multipliers of a PReLU conv. A requant
// op (one multiplier) drives both sides alike. y = (x M + 2^(n-1)) >>> n (one rounding, ties
// toward +infinity), then a saturating clamp to [QMIN, QMAX]; `code` is its OUT_BITS-bit two's
// complement pattern. ROUNDING = 1 rounds half away from zero instead (TFLite's rule, wrong
// here): the testbenches build it with -DFQSR_TIE_HALF_AWAY to prove they can fail.
module fqsr_requantizer #(
    parameter ACC_W = 32,          // width of the signed input value
    parameter OUT_BITS = 8,
    parameter integer QMIN = -127,
    parameter integer QMAX = 127,
    parameter ROUNDING = 0
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
    // sign extension to PW bits (loops instead of replications: any widths, no lint waivers)
    function signed [PW-1:0] from_acc;
        input [ACC_W-1:0] v;
        integer i;
        begin
            for (i = 0; i < PW; i = i + 1) from_acc[i] = v[(i < ACC_W) ? i : ACC_W - 1];
        end
    endfunction
    function signed [PW-1:0] from_int;
        input [31:0] v;
        integer i;
        begin
            for (i = 0; i < PW; i = i + 1) from_int[i] = v[(i < 32) ? i : 31];
        end
    endfunction
    function signed [PW-1:0] from_mult;   // zero-extended
        input [30:0] v;
        integer i;
        begin
            from_mult = {PW{1'b0}};
            for (i = 0; i < 31; i = i + 1) from_mult[i] = v[i];
        end
    endfunction
    localparam signed [PW-1:0] LO = from_int(QMIN), HI = from_int(QMAX);
    localparam signed [PW-1:0] ONE = {{(PW-1){1'b0}}, 1'b1};

    wire neg = acc[ACC_W-1];
    wire signed [PW-1:0] wide = from_acc(acc);
    wire signed [PW-1:0] x = (neg && neg_negate) ? -wide : wide;
    wire [5:0] n = neg ? neg_rshift : rshift;
    wire signed [PW-1:0] prod = x * from_mult(neg ? neg_mult : mult);
    wire signed [PW-1:0] half = (n == 6'd0) ? {PW{1'b0}} : (ONE <<< (n - 6'd1));
    // half up: floor((p + 2^(n-1)) / 2^n); half away from zero rounds |p| and restores the sign
    wire signed [PW-1:0] up = (prod + half) >>> n;
    wire signed [PW-1:0] mag = ((prod < 0 ? -prod : prod) + half) >>> n;
    wire signed [PW-1:0] y = (ROUNDING == 1) ? (prod < 0 ? -mag : mag) : up;
    wire signed [PW-1:0] clamped = (y < LO) ? LO : ((y > HI) ? HI : y);
    assign code = clamped[OUT_BITS-1:0];
    wire unused_ok = ^clamped[PW-1:OUT_BITS];   // the clamp makes the upper bits copies of the sign
endmodule
