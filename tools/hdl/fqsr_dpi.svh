// fqsr_dpi.svh: SystemVerilog DPI-C imports of the fqsr_ref golden model, one per
// function of tools/cport/fqsr_ops.h (same names, same argument order). Compile
// tools/cport/fqsr_ops.c with the testbench; with Verilator, for example,
//   $ verilator --binary -Itools/hdl tb.sv tools/cport/fqsr_ops.c
// (tools/hdl/Makefile, target dpi, builds fqsr_dpi_tb.sv that way).
// (Verilator compiles it as C++; fqsr_ops.h declares everything extern "C").
// Icarus Verilog has no DPI-C (VPI only); use the Verilog datapath in this directory.
//
// Types: int = C int (multipliers in [0, 2^31 - 1], shifts, signs, sizes, indices),
// longint = C long long (codes, accumulators, biases). A result of -2^63
// (FQSR_INVALID) means an input outside SPEC 6.4's domain or an index out of range.
//
// Include it inside a module or package. The scalar functions need nothing else. The
// array functions take fixed-size unpacked arrays (passed to C as pointers to the first
// element, C order); their sizes are localparams the includer declares before the
// `include, then defines FQSR_DPI_ARRAYS:
//   FQSR_DPI_X_LEN    N * CIN * H * W     input codes of a conv, NCHW
//   FQSR_DPI_W_LEN    COUT * CIN * K * K  OIHW weight codes
//   FQSR_DPI_B_LEN    COUT                biases
//   FQSR_DPI_ACC_LEN  N * COUT * H * W    accumulators, NCHW
//   FQSR_DPI_FAN_IN   CIN * K * K         one output element's window (plane.row/col)
//   FQSR_DPI_POP_LEN  ROW_BITS * COL_BITS plane-pair popcounts (plane.pop)
//   FQSR_DPI_SHUF_LEN elements of a pixel shuffle's input (= its output's)
// A conv's x and acc arrays may hold one image (N = 1); fqsr_conv_acc_at reads the
// first CIN * H * W elements of x.
`ifndef FQSR_DPI_SVH
`define FQSR_DPI_SVH

// ---- rounding and requantization (SPEC 6.2, 6.4) ----
import "DPI-C" pure function longint fqsr_rounding_right_shift(input longint v, input int n);
import "DPI-C" pure function int fqsr_requant_fits(input longint x, input int mult, input int shift);
import "DPI-C" pure function longint fqsr_requant(input longint x, input int mult, input int shift);
import "DPI-C" pure function longint fqsr_clamp(input longint v, input longint lo, input longint hi);
import "DPI-C" pure function longint fqsr_requant_clamp(input longint x, input int mult, input int shift,
                                                        input longint qmin, input longint qmax);
// a conv's output code from its accumulator: two multipliers (PReLU), then the clamp
import "DPI-C" pure function longint fqsr_conv_output(input longint acc, input int mult, input int shift,
                                                      input int neg_mult, input int neg_shift,
                                                      input int neg_sign, input longint qmin,
                                                      input longint qmax);
// ---- residual add (Eq. 7) ----
import "DPI-C" pure function int fqsr_add_fits(input longint a, input longint b, input int mult,
                                               input int branch_mult, input int shift);
import "DPI-C" pure function longint fqsr_add(input longint a, input longint b, input int branch_relu,
                                              input int mult, input int branch_mult, input int shift,
                                              input longint qmin, input longint qmax);
// ---- bit planes (SPEC 6.7), scalar ----
import "DPI-C" pure function int fqsr_code_bit(input longint code, input int m);
import "DPI-C" pure function longint fqsr_plane_weight(input int m, input int bits, input int is_signed);

`ifdef FQSR_DPI_ARRAYS
// ---- convolution (SPEC 6.6) ----
import "DPI-C" pure function longint fqsr_conv_acc_at(input longint x[FQSR_DPI_X_LEN], input int cin,
                                                      input int h, input int w,
                                                      input longint weights[FQSR_DPI_W_LEN],
                                                      input int cout, input int k, input longint bias,
                                                      input int o, input int oy, input int ox);
import "DPI-C" function void fqsr_conv_acc(input longint x[FQSR_DPI_X_LEN], input int n, input int cin,
                                           input int h, input int w, input longint weights[FQSR_DPI_W_LEN],
                                           input longint bias[FQSR_DPI_B_LEN], input int cout, input int k,
                                           output longint acc[FQSR_DPI_ACC_LEN]);
import "DPI-C" function void fqsr_conv_row(input longint x[FQSR_DPI_X_LEN], input int cin, input int h,
                                           input int w, input int k, input int oy, input int ox,
                                           output longint row[FQSR_DPI_FAN_IN]);
// ---- pixel shuffle ----
import "DPI-C" function void fqsr_pixel_shuffle(input longint x[FQSR_DPI_SHUF_LEN], input int n, input int c,
                                                input int h, input int w, input int r,
                                                output longint y[FQSR_DPI_SHUF_LEN]);
// ---- bit planes (SPEC 6.7), one output element ----
import "DPI-C" function void fqsr_plane_partials(input longint row[FQSR_DPI_FAN_IN],
                                                 input longint col[FQSR_DPI_FAN_IN], input int fan_in,
                                                 input int row_bits, input int col_bits,
                                                 output int pop[FQSR_DPI_POP_LEN]);
import "DPI-C" pure function longint fqsr_plane_acc(input int pop[FQSR_DPI_POP_LEN], input int row_bits,
                                                    input int row_signed, input int col_bits,
                                                    input int col_signed, input longint bias);
`endif

`endif
