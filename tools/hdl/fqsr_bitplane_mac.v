// fqsr_bitplane_mac.v: popcount sums and weighted accumulation of the bit-plane pairs of one
// conv tap (SPEC 6.7, Eq. 2), Verilog-2005, synthesizable style; part of the example conv unit
// (fqsr_conv_unit.v, which describes the interface). Lint-clean under verilator --lint-only -Wall.
//
// Per plane pair (m, p) a tap adds w_m * w_p * popcount(a_m AND b_p), w_m = 2^m, but -2^(M-1)
// for a signed top plane; `pops` keeps the popcount sums per pair (the vectors' plane.pop),
// pair (m, p) in bits [(m B_BITS + p) POP_W, ... + POP_W). The sum is kept modulo 2^ACC_W,
// which is exact because the final accumulator fits ACC_W bits (ACC_BITS of the kit header).
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
    input  wire signed [ACC_W-1:0]         bias,      // the bias, sign-extended or cut to ACC_W
    input  wire                            valid,     // add one tap
    input  wire [A_BITS*CIN-1:0]           a_planes,  // plane m of the CIN inputs in bits [m CIN, (m+1) CIN)
    input  wire [B_BITS*CIN-1:0]           b_planes,  // plane p of the CIN weights likewise
    output reg  signed [ACC_W-1:0]         acc,
    output reg  [A_BITS*B_BITS*POP_W-1:0]  pops
);
    // popcount by a tree of pairwise sums (SWAR) on a power-of-two width XW >= POP_W
    localparam PW2 = (CIN <= 1) ? 2 : (1 << $clog2(CIN));
    localparam XW = (PW2 > POP_W) ? PW2 : POP_W;
    function [XW-1:0] pair_mask;   // bit i set where (i / s) is even
        input integer s;
        integer i;
        begin
            pair_mask = {XW{1'b0}};
            for (i = 0; i < XW; i = i + 1)
                if ((i / s) % 2 == 0) pair_mask[i] = 1'b1;
        end
    endfunction
    localparam [XW-1:0] M1 = pair_mask(1), M2 = pair_mask(2), M4 = pair_mask(4), M8 = pair_mask(8),
                        M16 = pair_mask(16), M32 = pair_mask(32), M64 = pair_mask(64), M128 = pair_mask(128);
    function [POP_W-1:0] popcount;
        input [CIN-1:0] v;
        reg [XW-1:0] x;
        integer i;
        begin
            x = {XW{1'b0}};
            for (i = 0; i < CIN; i = i + 1) x[i] = v[i];
            x = (x & M1) + ((x >> 1) & M1);
            if (PW2 > 2) x = (x & M2) + ((x >> 2) & M2);
            if (PW2 > 4) x = (x & M4) + ((x >> 4) & M4);
            if (PW2 > 8) x = (x & M8) + ((x >> 8) & M8);
            if (PW2 > 16) x = (x & M16) + ((x >> 16) & M16);
            if (PW2 > 32) x = (x & M32) + ((x >> 32) & M32);
            if (PW2 > 64) x = (x & M64) + ((x >> 64) & M64);
            if (PW2 > 128) x = (x & M128) + ((x >> 128) & M128);
            popcount = x[POP_W-1:0];      // at most CIN <= FAN_IN: fits POP_W
        end
    endfunction
    // a count as an ACC_W-bit term (zero-extended, or cut: the sum is mod 2^ACC_W)
    function [ACC_W-1:0] widen;
        input [POP_W-1:0] v;
        integer i;
        begin
            widen = {ACC_W{1'b0}};
            for (i = 0; i < POP_W && i < ACC_W; i = i + 1) widen[i] = v[i];
        end
    endfunction

    // the tap's contribution, and its popcounts per pair
    reg [ACC_W-1:0] tap_sum;
    reg [A_BITS*B_BITS*POP_W-1:0] tap_pops;
    reg [POP_W-1:0] count;
    reg [ACC_W-1:0] term;
    integer m, p;

    always @* begin
        tap_sum = {ACC_W{1'b0}};
        tap_pops = {(A_BITS*B_BITS*POP_W){1'b0}};
        for (m = 0; m < A_BITS; m = m + 1)
            for (p = 0; p < B_BITS; p = p + 1) begin
                // AND of plane m of the inputs and plane p of the weights, then popcount
                count = popcount(a_planes[m*CIN +: CIN] & b_planes[p*CIN +: CIN]);
                tap_pops[(m*B_BITS + p)*POP_W +: POP_W] = count;
                // shift-add: 2^(m+p), negated when exactly one plane is a signed top plane
                term = widen(count) << (m + p);
                if ((A_SIGNED != 0 && m == A_BITS - 1) != (B_SIGNED != 0 && p == B_BITS - 1))
                    tap_sum = tap_sum - term;
                else
                    tap_sum = tap_sum + term;
            end
    end

    integer i;
    always @(posedge clk) begin
        if (start) begin
            acc <= bias;
            pops <= {(A_BITS*B_BITS*POP_W){1'b0}};
        end else if (valid) begin
            acc <= acc + $signed(tap_sum);
            for (i = 0; i < A_BITS*B_BITS; i = i + 1)
                pops[i*POP_W +: POP_W] <= pops[i*POP_W +: POP_W] + tap_pops[i*POP_W +: POP_W];
        end
    end
endmodule
