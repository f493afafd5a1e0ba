// fqsr_dpi.svh: SystemVerilog DPI-C imports of the fqsr_ref golden model, one per
// function of tools/cport/fqsr_ops.h (same names, same argument order). Compile
// tools/cport/fqsr_ops.c with the testbench; with Verilator, for example,
//   $ verilator --binary -Itools/hdl tb.sv tools/cport/fqsr_ops.c
// (tools/hdl/Makefile, target dpi, builds fqsr_dpi_tb.sv that way; Verilator compiles
// the library as C++, and fqsr_ops.h declares everything extern "C").
// Icarus Verilog has no DPI-C (VPI only); use the Verilog datapath in this directory.
//
// Types: int = C int (multipliers in [0, 2^31 - 1], shifts, signs, sizes, indices),
// longint = C long long (codes, accumulators, biases). A result of -2^63
// (FQSR_INVALID) means an input outside SPEC 6.4's domain or an index out of range.
//
// Include it inside every module (or package) that calls the functions: imports are
// scoped, so there is no include guard. The array functions are in fqsr_dpi_conv.svh
// (convolution, bit planes) and fqsr_dpi_shuffle.svh (pixel shuffle): their fixed-size
// array arguments take their sizes from localparams the includer declares first.

// ---- rounding and requantization (SPEC 6.2, 6.4) ----
import "DPI-C" pure function longint fqsr_rounding_right_shift(input longint v, input int n);
import "DPI-C" pure function int fqsr_requant_fits(input longint x, input int mult, input int shift);
import "DPI-C" pure function longint fqsr_requant(input longint x, input int mult, input int shift);
import "DPI-C" pure function int fqsr_product_bits(input longint bound, input int mult, input int shift);
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
