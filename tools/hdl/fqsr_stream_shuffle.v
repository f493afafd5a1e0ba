// fqsr_stream_shuffle.v: the pixel shuffle of SPEC 6.8 as a streaming unit, Verilog-2005,
// synthesizable style, lint-clean under verilator --lint-only -Wall.
//
//   y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w]        (r = FACTOR, C = CIN / r^2)
//
// In: the LR tensor x in raster order, CIN channels a pixel folded to LANES a beat (vectors/
// README.md, "Stream-order vectors"). Out: the HR tensor y in raster order, C channels a pixel
// at LANES a beat. Codes pass unchanged; only the order of the beats changes, and lane l of an
// output beat gathers its channel from a different input beat (stride r^2 in the input's
// channels), so the unit must hold input before it can emit:
//
// Buffering. HR rows h r .. h r + r - 1 all come from LR row h, and their first beat needs
// channels of LR pixel (h, 0) while the last needs LR pixel (h, W-1): every one of the r HR rows
// reads the whole LR row. So the unit stores whole LR rows: two banks of W_IN x CIN codes
// (2 W_IN ceil(CIN / LANES) LANES codes of BITS bits; 2 x 3 x 32 x 4 bits = 768 bits for the
// corner set's 5x3 stimulus, 2 x 16 x 32 x 4 = 4 kbit at 16x16). Row h is written into one bank
// while the r HR rows of row h-1 are read from the other (ping-pong); a bank is free again after
// its last output beat. With one bank the input would stall for the whole output of a row.
// In a beat's time the input writes LANES codes and the output reads LANES codes from
// scattered addresses: registers (or LANES-ported / lane-banked memory), not one BRAM port.
// Rows end at the input's TLAST; the output's TUSER is the TUSER of the LR row's first beat,
// on the first beat of that row's first HR row.
module fqsr_stream_shuffle #(
    parameter LANES = 4,
    parameter BITS = 4,
    parameter CIN = 32,             // input channels, C r^2
    parameter FACTOR = 2,           // r
    parameter W_IN = 3              // LR pixels a row
) (
    input  wire                        clk,
    input  wire                        rst,
    input  wire [LANES*BITS-1:0]       s_tdata,
    input  wire                        s_tuser,
    input  wire                        s_tlast,
    input  wire                        s_tvalid,
    output wire                        s_tready,
    output reg  [LANES*BITS-1:0]       m_tdata,
    output reg                         m_tuser,
    output reg                         m_tlast,
    output reg                         m_tvalid,
    input  wire                        m_tready
);
    localparam C = CIN / (FACTOR * FACTOR);
    localparam GI = (CIN + LANES - 1) / LANES;       // input beats a pixel
    localparam GO = (C + LANES - 1) / LANES;         // output beats a pixel
    localparam CINP = GI * LANES;                    // stored codes a pixel
    localparam DEPTH = 2 * W_IN * CINP;
    localparam AW = (DEPTH > 1) ? $clog2(DEPTH) : 1;

    reg [BITS-1:0] mem [0:DEPTH-1];
    reg [1:0] full;                  // bank b holds a whole LR row not yet emitted
    reg [1:0] row_user;              // that row's first beat had TUSER
    reg wbank, rbank;
    // every counter and address fits AW bits (a pixel's index, a channel's, below DEPTH)
    localparam integer I_LANES = LANES, I_C = C, I_R = FACTOR, I_CINP = CINP, I_BANK = W_IN * CINP;
    localparam integer I_X_LAST = W_IN - 1, I_GI_LAST = GI - 1, I_GO_LAST = GO - 1;
    localparam [AW-1:0] A_LANES = I_LANES[AW-1:0], A_C = I_C[AW-1:0], A_R = I_R[AW-1:0];
    localparam [AW-1:0] A_CINP = I_CINP[AW-1:0], A_BANK = I_BANK[AW-1:0];
    localparam [AW-1:0] X_LAST = I_X_LAST[AW-1:0], GI_LAST = I_GI_LAST[AW-1:0], GO_LAST = I_GO_LAST[AW-1:0];
    localparam [AW-1:0] R_LAST = A_R - 1'b1;
    reg [AW-1:0] in_x, in_g;                 // the input beat's pixel and channel group
    reg [AW-1:0] out_i, out_x, out_j, out_g; // HR sub-row, LR column, sub-column, group

    function [AW-1:0] addr;          // bank, pixel, channel -> the code's word
        input b;
        input [AW-1:0] x;
        input [AW-1:0] ch;
        begin
            addr = (b ? A_BANK : {AW{1'b0}}) + x * A_CINP + ch;
        end
    endfunction

    // the output beat at (rbank, out_i, out_x, out_j, out_g), lane by lane
    wire [LANES*BITS-1:0] gathered;
    genvar l;
    generate
        for (l = 0; l < LANES; l = l + 1) begin : lane
            localparam integer I_L = l;
            localparam [AW-1:0] L = I_L[AW-1:0];
            wire [AW-1:0] c = out_g * A_LANES + L;
            wire present = c < A_C;
            wire [AW-1:0] at = addr(rbank, out_x, present ? c * A_R * A_R + out_i * A_R + out_j : {AW{1'b0}});
            assign gathered[l*BITS +: BITS] = present ? mem[at] : {BITS{1'b0}};
        end
    endgenerate

    assign s_tready = !full[wbank];
    wire in_take = s_tvalid && s_tready;
    wire out_free = !m_tvalid || m_tready;
    wire out_take = full[rbank] && out_free;
    wire row_last = (out_x == X_LAST) && (out_j == R_LAST) && (out_g == GO_LAST);
    wire rows_done = row_last && (out_i == R_LAST);
    integer k;

    always @(posedge clk) begin
        if (in_take)
            for (k = 0; k < LANES; k = k + 1)
                mem[addr(wbank, in_x, in_g * A_LANES + k[AW-1:0])] <= s_tdata[k*BITS +: BITS];
    end

    always @(posedge clk) begin
        if (rst) begin
            full <= 2'b00;
            row_user <= 2'b00;
            wbank <= 1'b0;
            rbank <= 1'b0;
            in_x <= 0;
            in_g <= 0;
            out_i <= 0;
            out_x <= 0;
            out_j <= 0;
            out_g <= 0;
            m_tvalid <= 1'b0;
            m_tdata <= {(LANES*BITS){1'b0}};
            m_tuser <= 1'b0;
            m_tlast <= 1'b0;
        end else begin
            if (in_take) begin
                if (in_x == 0 && in_g == 0) row_user[wbank] <= s_tuser;
                if (s_tlast) begin
                    in_x <= 0;
                    in_g <= 0;
                    full[wbank] <= 1'b1;
                    wbank <= !wbank;
                end else if (in_g == GI_LAST) begin
                    in_g <= 0;
                    in_x <= in_x + 1'b1;
                end else
                    in_g <= in_g + 1'b1;
            end
            if (out_free) m_tvalid <= full[rbank];
            if (out_take) begin
                m_tdata <= gathered;
                m_tuser <= row_user[rbank] && out_i == 0 && out_x == 0 && out_j == 0 && out_g == 0;
                m_tlast <= row_last;
                if (out_g != GO_LAST)
                    out_g <= out_g + 1'b1;
                else begin
                    out_g <= 0;
                    if (out_j != R_LAST)
                        out_j <= out_j + 1'b1;
                    else begin
                        out_j <= 0;
                        if (out_x != X_LAST)
                            out_x <= out_x + 1'b1;
                        else begin
                            out_x <= 0;
                            out_i <= (out_i == R_LAST) ? {AW{1'b0}} : out_i + 1'b1;
                        end
                    end
                end
                if (rows_done) begin
                    full[rbank] <= 1'b0;
                    rbank <= !rbank;
                end
            end
        end
    end
endmodule
