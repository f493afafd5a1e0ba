// fqsr_dpi_tb.sv: the DPI-C golden model (tools/cport/fqsr_ops.c through fqsr_dpi.svh)
// checked against one conv of a golden vector set: a SystemVerilog testbench would call
// these functions as its reference. Verilator: `make -C tools/hdl dpi` (the conv's
// <stimulus>/<conv>.svh included as "fqsr_params.svh", run in the set directory).
//
// From the input codes, weights and biases (.mem files at their own widths) it computes
// every accumulator with fqsr_conv_acc, and per element fqsr_conv_acc_at, the output code
// with fqsr_conv_output and the plane partials of one element with fqsr_conv_row +
// fqsr_plane_partials + fqsr_plane_acc, and compares them with the golden .mem files.
module fqsr_dpi_tb;
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
    localparam int FQSR_DPI_SHUF_LEN = X_LEN;
`define FQSR_DPI_ARRAYS
`include "fqsr_dpi.svh"

    logic [IN_BITS-1:0]  in_mem [X_LEN];
    logic [W_BITS-1:0]   w_mem [COUT * FAN_IN];
    logic [31:0]         b_mem [COUT];
    logic [ACC_BITS-1:0] acc_mem [OUTPUTS];
    logic [OUT_BITS-1:0] out_mem [OUTPUTS];

    longint x[X_LEN], weights[COUT * FAN_IN], bias[COUT], acc[OUTPUTS], image[X_LEN];
    longint row[FAN_IN], col[FAN_IN], code, expected;
    int pop[PAIRS];
    int bad = 0, checked = 0;

    // a field of `bits` bits as a code: sign-extended when the tensor is signed
    function automatic longint code_of(input logic [63:0] pattern, input int bits, input int is_signed);
        longint v = longint'(pattern & ((64'd1 << bits) - 1));
        if (is_signed != 0 && pattern[bits - 1]) v = v - (longint'(1) << bits);
        return v;
    endfunction

    initial begin
        $readmemh(IN_MEM, in_mem);
        $readmemh(W_MEM, w_mem);
        $readmemh(B_MEM, b_mem);
        $readmemh(ACC_MEM, acc_mem);
        $readmemh(OUT_MEM, out_mem);
        for (int i = 0; i < X_LEN; i++) x[i] = code_of(64'(in_mem[i]), IN_BITS, IN_SIGNED);
        for (int i = 0; i < COUT * FAN_IN; i++) weights[i] = code_of(64'(w_mem[i]), W_BITS, 1);
        for (int i = 0; i < COUT; i++) bias[i] = code_of(64'(b_mem[i]), 32, 1);
        fqsr_conv_acc(x, BATCH, CIN, H_IN, W_IN, weights, bias, COUT, K, acc);
        for (int i = 0; i < OUTPUTS; i++) begin
            int n = i / (COUT * H_OUT * W_OUT), o = (i / (H_OUT * W_OUT)) % COUT;
            int oy = (i / W_OUT) % H_OUT, ox = i % W_OUT;
            expected = code_of(64'(acc_mem[i]), ACC_BITS, 1);
            // fqsr_conv_acc_at reads one image: pass image n alone
            for (int j = 0; j < CIN * H_IN * W_IN; j++) image[j] = x[n * CIN * H_IN * W_IN + j];
            if (acc[i] != expected || fqsr_conv_acc_at(image, CIN, H_IN, W_IN, weights, COUT, K, bias[o],
                                                      o, oy, ox) != expected) begin
                if (++bad <= 5) $display("mismatch: accumulator %0d expected %0d got %0d", i, expected, acc[i]);
            end
            code = fqsr_conv_output(acc[i], MULT, SHIFT, NEG_MULT, NEG_SHIFT, NEG_SIGN, longint'(QMIN),
                                    longint'(QMAX));
            if (longint'(OUT_BITS == 64 ? code : code & ((longint'(1) << OUT_BITS) - 1)) != longint'(out_mem[i])) begin
                if (++bad <= 5) $display("mismatch: code %0d expected %h got %0d", i, out_mem[i], code);
            end
            checked += 2;
        end
        // plane partials of element (0, 0, H / 2, W / 2): they rebuild its accumulator
        fqsr_conv_row(x, CIN, H_IN, W_IN, K, H_OUT / 2, W_OUT / 2, row);
        for (int i = 0; i < FAN_IN; i++) col[i] = weights[i];
        fqsr_plane_partials(row, col, FAN_IN, IN_BITS, W_BITS, pop);
        if (fqsr_plane_acc(pop, IN_BITS, IN_SIGNED, W_BITS, 1, bias[0]) != acc[(H_OUT / 2) * W_OUT + W_OUT / 2]) begin
            bad++;
            $display("mismatch: the plane partials do not rebuild the accumulator");
        end
        if (bad == 0)
            $display("fqsr_dpi_tb: PASS %0d accumulators and codes, plane partials of one element (%0d x %0d x %0dx%0d)",
                     checked, BATCH, COUT, H_OUT, W_OUT);
        else
            $display("fqsr_dpi_tb: FAIL %0d mismatches", bad);
        $finish;
    end
endmodule
