// fqsr_dpi_tb.sv: the DPI-C golden model (tools/cport/fqsr_ops.c through fqsr_dpi.svh,
// fqsr_dpi_conv.svh, fqsr_dpi_shuffle.svh) checked against four ops of a golden vector set
// for one stimulus, as a SystemVerilog testbench would use it for its reference values.
// Run it with `make -C tools/hdl dpi` (Verilator), which copies the ops' <stimulus>/<op>.svh headers as
// fqsr_params.svh (a conv), fqsr_requant_params.svh, fqsr_add_params.svh and
// fqsr_shuffle_params.svh and runs the binary in the set directory.
//
// conv: every accumulator with fqsr_conv_acc and fqsr_conv_acc_at, every code with
// fqsr_conv_output, the plane partials of element (0, 0, H / 2, W / 2) with fqsr_conv_row,
// fqsr_plane_partials and fqsr_plane_acc; requant: fqsr_requant_clamp; add: fqsr_add
// (Eq. 7); shuffle: fqsr_pixel_shuffle. All from the input .mem files, compared with the
// output .mem files. Last line: "fqsr_dpi_tb: PASS ..." or "fqsr_dpi_tb: FAIL ...".

// a field of `bits` bits as a code: sign-extended when the tensor is signed
function automatic longint fqsr_code_of(input logic [63:0] pattern, input int bits, input int is_signed);
    longint v = longint'(pattern & ((64'd1 << bits) - 1));
    if (is_signed != 0 && pattern[bits - 1]) v = v - (longint'(1) << bits);
    return v;
endfunction

// a result as the OUT_BITS-wide pattern a .mem file holds
function automatic longint fqsr_pattern_of(input longint v, input int bits);
    return v & ((longint'(1) << bits) - 1);
endfunction

module fqsr_dpi_conv_check(output int bad, output int checked);
`include "fqsr_params.svh"
    localparam int X_LEN = BATCH * CIN * H_IN * W_IN;
    localparam int OUTPUTS = BATCH * COUT * H_OUT * W_OUT;
    localparam int PAIRS = IN_BITS * W_BITS;
    localparam int FQSR_DPI_X_LEN = X_LEN;
    localparam int FQSR_DPI_W_LEN = COUT * FAN_IN;
    localparam int FQSR_DPI_B_LEN = COUT;
    localparam int FQSR_DPI_ACC_LEN = OUTPUTS;
    localparam int FQSR_DPI_FAN_IN = FAN_IN;
    localparam int FQSR_DPI_POP_LEN = PAIRS;
`include "fqsr_dpi.svh"
`include "fqsr_dpi_conv.svh"

    logic [IN_BITS-1:0]  in_mem [X_LEN];
    logic [W_BITS-1:0]   w_mem [COUT * FAN_IN];
    logic [31:0]         b_mem [COUT];
    logic [ACC_BITS-1:0] acc_mem [OUTPUTS];
    logic [OUT_BITS-1:0] out_mem [OUTPUTS];
    longint x[X_LEN], weights[COUT * FAN_IN], bias[COUT], acc[OUTPUTS], image[X_LEN];
    longint row[FAN_IN], col[FAN_IN], expected, code;
    int pop[PAIRS];

    initial begin
        bad = 0;
        checked = 0;
        $readmemh(IN_MEM, in_mem);
        $readmemh(W_MEM, w_mem);
        $readmemh(B_MEM, b_mem);
        $readmemh(ACC_MEM, acc_mem);
        $readmemh(OUT_MEM, out_mem);
        for (int i = 0; i < X_LEN; i++) x[i] = fqsr_code_of(64'(in_mem[i]), IN_BITS, IN_SIGNED);
        for (int i = 0; i < COUT * FAN_IN; i++) weights[i] = fqsr_code_of(64'(w_mem[i]), W_BITS, 1);
        for (int i = 0; i < COUT; i++) bias[i] = fqsr_code_of(64'(b_mem[i]), 32, 1);
        fqsr_conv_acc(x, BATCH, CIN, H_IN, W_IN, weights, bias, COUT, K, acc);
        for (int i = 0; i < OUTPUTS; i++) begin
            int n = i / (COUT * H_OUT * W_OUT), o = (i / (H_OUT * W_OUT)) % COUT;
            int oy = (i / W_OUT) % H_OUT, ox = i % W_OUT;
            expected = fqsr_code_of(64'(acc_mem[i]), ACC_BITS, 1);
            // fqsr_conv_acc_at reads one image: image n alone
            for (int j = 0; j < CIN * H_IN * W_IN; j++) image[j] = x[n * CIN * H_IN * W_IN + j];
            if (acc[i] != expected
                || fqsr_conv_acc_at(image, CIN, H_IN, W_IN, weights, COUT, K, bias[o], o, oy, ox) != expected) begin
                if (++bad <= 5) $display("mismatch: conv accumulator %0d expected %0d got %0d", i, expected, acc[i]);
            end
            code = fqsr_conv_output(acc[i], MULT, SHIFT, NEG_MULT, NEG_SHIFT, NEG_SIGN, longint'(QMIN),
                                    longint'(QMAX));
            if (fqsr_pattern_of(code, OUT_BITS) != longint'(out_mem[i])) begin
                if (++bad <= 5) $display("mismatch: conv code %0d expected %h got %0d", i, out_mem[i], code);
            end
            checked += 2;
        end
        // plane partials of element (0, 0, H / 2, W / 2): they rebuild its accumulator
        fqsr_conv_row(x, CIN, H_IN, W_IN, K, H_OUT / 2, W_OUT / 2, row);
        for (int i = 0; i < FAN_IN; i++) col[i] = weights[i];
        fqsr_plane_partials(row, col, FAN_IN, IN_BITS, W_BITS, pop);
        checked++;
        if (fqsr_plane_acc(pop, IN_BITS, IN_SIGNED, W_BITS, 1, bias[0]) != acc[(H_OUT / 2) * W_OUT + W_OUT / 2]) begin
            bad++;
            $display("mismatch: the conv's plane partials do not rebuild its accumulator");
        end
    end
endmodule

`ifndef FQSR_DPI_NO_REQUANT     // defined by make dpi for a model without requant ops
module fqsr_dpi_requant_check(output int bad, output int checked);
`include "fqsr_requant_params.svh"
`include "fqsr_dpi.svh"
    localparam int LEN = BATCH * C * H_IN * W_IN;
    logic [IN_BITS-1:0] in_mem [LEN];
    logic [OUT_BITS-1:0] out_mem [LEN];
    longint code;

    initial begin
        bad = 0;
        checked = 0;
        $readmemh(IN_MEM, in_mem);
        $readmemh(OUT_MEM, out_mem);
        for (int i = 0; i < LEN; i++) begin
            code = fqsr_requant_clamp(fqsr_code_of(64'(in_mem[i]), IN_BITS, IN_SIGNED), MULT, SHIFT,
                                      longint'(QMIN), longint'(QMAX));
            checked++;
            if (fqsr_pattern_of(code, OUT_BITS) != longint'(out_mem[i]))
                if (++bad <= 5) $display("mismatch: requant %0d expected %h got %0d", i, out_mem[i], code);
        end
    end
endmodule
`endif

module fqsr_dpi_add_check(output int bad, output int checked);
`include "fqsr_add_params.svh"
`include "fqsr_dpi.svh"
    localparam int LEN = BATCH * C * H_IN * W_IN;
    logic [IN_BITS-1:0] in_mem [LEN];
    logic [BR_BITS-1:0] br_mem [LEN];
    logic [OUT_BITS-1:0] out_mem [LEN];
    longint code;

    initial begin
        bad = 0;
        checked = 0;
        $readmemh(IN_MEM, in_mem);
        $readmemh(BR_MEM, br_mem);
        $readmemh(OUT_MEM, out_mem);
        for (int i = 0; i < LEN; i++) begin
            code = fqsr_add(fqsr_code_of(64'(in_mem[i]), IN_BITS, IN_SIGNED),
                            fqsr_code_of(64'(br_mem[i]), BR_BITS, BR_SIGNED), BRANCH_RELU, MULT, BRANCH_MULT,
                            SHIFT, longint'(QMIN), longint'(QMAX));
            checked++;
            if (fqsr_pattern_of(code, OUT_BITS) != longint'(out_mem[i]))
                if (++bad <= 5) $display("mismatch: add %0d expected %h got %0d", i, out_mem[i], code);
        end
    end
endmodule

module fqsr_dpi_shuffle_check(output int bad, output int checked);
`include "fqsr_shuffle_params.svh"
    localparam int LEN = BATCH * CIN * H_IN * W_IN;
    localparam int FQSR_DPI_SHUF_LEN = LEN;
`include "fqsr_dpi_shuffle.svh"
    logic [IN_BITS-1:0] in_mem [LEN];
    logic [OUT_BITS-1:0] out_mem [LEN];
    longint x[LEN], y[LEN];

    initial begin
        bad = 0;
        checked = 0;
        $readmemh(IN_MEM, in_mem);
        $readmemh(OUT_MEM, out_mem);
        for (int i = 0; i < LEN; i++) x[i] = fqsr_code_of(64'(in_mem[i]), IN_BITS, IN_SIGNED);
        fqsr_pixel_shuffle(x, BATCH, CIN, H_IN, W_IN, FACTOR, y);
        for (int i = 0; i < LEN; i++) begin
            checked++;
            if (fqsr_pattern_of(y[i], OUT_BITS) != longint'(out_mem[i]))
                if (++bad <= 5) $display("mismatch: shuffle %0d expected %h got %0d", i, out_mem[i], y[i]);
        end
    end
endmodule

module fqsr_dpi_tb;
    int bad[4], checked[4];
    fqsr_dpi_conv_check conv (.bad(bad[0]), .checked(checked[0]));
`ifdef FQSR_DPI_NO_REQUANT
    initial begin bad[1] = 0; checked[1] = 0; end
`else
    fqsr_dpi_requant_check requant (.bad(bad[1]), .checked(checked[1]));
`endif
    fqsr_dpi_add_check add (.bad(bad[2]), .checked(checked[2]));
    fqsr_dpi_shuffle_check shuffle (.bad(bad[3]), .checked(checked[3]));

    initial begin
        #1;   // the checks run at time 0
        if (bad[0] + bad[1] + bad[2] + bad[3] == 0)
            $display("fqsr_dpi_tb: PASS conv %0d, requant %0d, add %0d, shuffle %0d values",
                     checked[0], checked[1], checked[2], checked[3]);
        else
            $display("fqsr_dpi_tb: FAIL %0d mismatches (conv %0d, requant %0d, add %0d, shuffle %0d)",
                     bad[0] + bad[1] + bad[2] + bad[3], bad[0], bad[1], bad[2], bad[3]);
        $finish;
    end
endmodule
