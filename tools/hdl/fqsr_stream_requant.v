// fqsr_stream_requant.v: a streaming requantizer, Verilog-2005, synthesizable style,
// lint-clean under verilator --lint-only -Wall. One beat of LANES values in, one beat of
// LANES codes out (the beat layout of vectors/README.md, "Stream-order vectors", without the
// TUSER/TLAST bits, which travel beside the data), valid/ready with one output register:
// s_tready = !m_tvalid || m_tready, so it takes a beat every cycle the sink takes one.
//
// Two uses: a requant op (`<conv>.in`: one multiplier, NEG_* = the same) on IN_BITS codes,
// and a conv's output stage on its ACC_BITS accumulators with the PReLU's two multipliers
// (acc < 0: NEG_MULT, NEG_RSHIFT on NEG_SIGN * acc). Lanes past C carry 0 and stay 0.
module fqsr_stream_requant #(
    parameter LANES = 4,
    parameter IN_BITS = 8,
    parameter IN_SIGNED = 1,       // 0: unsigned input codes (the image)
    parameter OUT_BITS = 4,
    parameter integer QMIN = -7,
    parameter integer QMAX = 7,
    parameter [30:0] MULT = 31'd1073741824,
    parameter [5:0] RSHIFT = 6'd31,
    parameter [30:0] NEG_MULT = 31'd1073741824,
    parameter [5:0] NEG_RSHIFT = 6'd31,
    parameter NEG_NEGATE = 0,      // NEG_SIGN = -1
    parameter ROUNDING = 0         // 1: half away from zero (wrong; see fqsr_requantizer.v)
) (
    input  wire                        clk,
    input  wire                        rst,
    input  wire [LANES*IN_BITS-1:0]    s_tdata,
    input  wire                        s_tuser,
    input  wire                        s_tlast,
    input  wire                        s_tvalid,
    output wire                        s_tready,
    output reg  [LANES*OUT_BITS-1:0]   m_tdata,
    output reg                         m_tuser,
    output reg                         m_tlast,
    output reg                         m_tvalid,
    input  wire                        m_tready
);
    localparam AW = IN_BITS + 1;   // the signed value of a lane (unsigned codes gain a 0 sign bit)
    wire [LANES*OUT_BITS-1:0] codes;
    genvar l;
    generate
        for (l = 0; l < LANES; l = l + 1) begin : lane
            wire [IN_BITS-1:0] field = s_tdata[l*IN_BITS +: IN_BITS];
            wire signed [AW-1:0] value = {(IN_SIGNED != 0) & field[IN_BITS-1], field};
            fqsr_requantizer #(.ACC_W(AW), .OUT_BITS(OUT_BITS), .QMIN(QMIN), .QMAX(QMAX), .ROUNDING(ROUNDING))
                rq (.acc(value), .mult(MULT), .rshift(RSHIFT), .neg_mult(NEG_MULT), .neg_rshift(NEG_RSHIFT),
                    .neg_negate(NEG_NEGATE != 0), .code(codes[l*OUT_BITS +: OUT_BITS]));
        end
    endgenerate

    assign s_tready = !m_tvalid || m_tready;
    always @(posedge clk) begin
        if (rst) begin
            m_tvalid <= 1'b0;
            m_tdata <= {(LANES*OUT_BITS){1'b0}};
            m_tuser <= 1'b0;
            m_tlast <= 1'b0;
        end else if (s_tready) begin
            m_tvalid <= s_tvalid;
            if (s_tvalid) begin
                m_tdata <= codes;
                m_tuser <= s_tuser;
                m_tlast <= s_tlast;
            end
        end
    end
endmodule
