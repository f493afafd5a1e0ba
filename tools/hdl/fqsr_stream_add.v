// fqsr_stream_add.v: the residual add of SPEC 6.8 as a streaming unit, Verilog-2005,
// synthesizable style, lint-clean under verilator --lint-only -Wall. Two input streams, the
// skip a (s_*) and the branch b (b_*), each LANES values a beat in the beat layout of
// vectors/README.md, "Stream-order vectors" (same raster order and folding, so beat k of one
// pairs with beat k of the other); one output stream of LANES codes:
//
//   y = clamp(round_half_up((a MULT + b' BRANCH_MULT) / 2^RSHIFT)),  b' = max(b, 0) with
//   Eq. 7's branch ReLU (BRANCH_RELU = 1), else b; RSHIFT = 31 - SHIFT, the common shift.
//
// The sum is exact (no rounding before the one at the end, fqsr_requantizer's). valid/ready: a join, then one
// output register: a pair is taken when both inputs are valid and the register is free or
// being emptied (s_tready and b_tready depend on the other input's valid, never on their
// own). TUSER/TLAST go out from the skip beat; m_markers_differ rises (and stays) when the
// branch beat's markers differ from the skip beat's: the two streams are out of step.
module fqsr_stream_add #(
    parameter LANES = 4,
    parameter IN_BITS = 8,          // the skip's codes
    parameter IN_SIGNED = 1,
    parameter BR_BITS = 4,          // the branch's codes
    parameter BR_SIGNED = 1,
    parameter OUT_BITS = 8,
    parameter integer QMIN = -127,
    parameter integer QMAX = 127,
    parameter [30:0] MULT = 31'd1073741824,
    parameter [30:0] BRANCH_MULT = 31'd1073741824,
    parameter [5:0] RSHIFT = 6'd30,
    parameter BRANCH_RELU = 0,
    parameter ROUNDING = 0          // 1: half away from zero (wrong; the testbenches' mutant)
) (
    input  wire                        clk,
    input  wire                        rst,
    input  wire [LANES*IN_BITS-1:0]    s_tdata,
    input  wire                        s_tuser,
    input  wire                        s_tlast,
    input  wire                        s_tvalid,
    output wire                        s_tready,
    input  wire [LANES*BR_BITS-1:0]    b_tdata,
    input  wire                        b_tuser,
    input  wire                        b_tlast,
    input  wire                        b_tvalid,
    output wire                        b_tready,
    output reg  [LANES*OUT_BITS-1:0]   m_tdata,
    output reg                         m_tuser,
    output reg                         m_tlast,
    output reg                         m_tvalid,
    input  wire                        m_tready,
    output reg                         m_markers_differ
);
    localparam WIDE = (IN_BITS > BR_BITS) ? IN_BITS : BR_BITS;
    localparam SW = WIDE + 33;      // a M_a + b M_b, exact: |a|, |b| <= 2^WIDE, M < 2^31
    localparam [SW-1:0] MA = {{(SW-31){1'b0}}, MULT}, MB = {{(SW-31){1'b0}}, BRANCH_MULT};

    // lane l's code -> SW bits (sign- or zero-extended), loops instead of replications
    function signed [SW-1:0] skip_lane;
        input [LANES*IN_BITS-1:0] d;
        input integer l;
        integer i;
        begin
            for (i = 0; i < SW; i = i + 1)
                skip_lane[i] = d[l*IN_BITS + ((i < IN_BITS) ? i : IN_BITS - 1)] & ((i < IN_BITS) || (IN_SIGNED != 0));
        end
    endfunction
    function signed [SW-1:0] branch_lane;
        input [LANES*BR_BITS-1:0] d;
        input integer l;
        integer i;
        begin
            for (i = 0; i < SW; i = i + 1)
                branch_lane[i] = d[l*BR_BITS + ((i < BR_BITS) ? i : BR_BITS - 1)] & ((i < BR_BITS) || (BR_SIGNED != 0));
        end
    endfunction

    // the sum, then the one rounding and the clamp: fqsr_requantizer with multiplier 1 on both
    // sides (y = (sum + 2^(n-1)) >>> n, ties toward +infinity; ROUNDING = 1 the mutant)
    wire [LANES*OUT_BITS-1:0] codes;
    genvar l;
    generate
        for (l = 0; l < LANES; l = l + 1) begin : lane
            wire signed [SW-1:0] a = skip_lane(s_tdata, l);
            wire signed [SW-1:0] b = branch_lane(b_tdata, l);
            wire signed [SW-1:0] bp = ((BRANCH_RELU != 0) && b < 0) ? {SW{1'b0}} : b;
            wire signed [SW-1:0] sum = a * $signed(MA) + bp * $signed(MB);
            fqsr_requantizer #(.ACC_W(SW), .OUT_BITS(OUT_BITS), .QMIN(QMIN), .QMAX(QMAX), .ROUNDING(ROUNDING))
                rq (.acc(sum), .mult(31'd1), .rshift(RSHIFT), .neg_mult(31'd1), .neg_rshift(RSHIFT),
                    .neg_negate(1'b0), .code(codes[l*OUT_BITS +: OUT_BITS]));
        end
    endgenerate

    wire free = !m_tvalid || m_tready;
    wire take = s_tvalid && b_tvalid && free;
    assign s_tready = b_tvalid && free;
    assign b_tready = s_tvalid && free;
    always @(posedge clk) begin
        if (rst) begin
            m_tvalid <= 1'b0;
            m_tdata <= {(LANES*OUT_BITS){1'b0}};
            m_tuser <= 1'b0;
            m_tlast <= 1'b0;
            m_markers_differ <= 1'b0;
        end else begin
            if (free) m_tvalid <= s_tvalid && b_tvalid;
            if (take) begin
                m_tdata <= codes;
                m_tuser <= s_tuser;
                m_tlast <= s_tlast;
                if (s_tuser != b_tuser || s_tlast != b_tlast) m_markers_differ <= 1'b1;
            end
        end
    end
endmodule
