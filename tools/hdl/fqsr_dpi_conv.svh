// fqsr_dpi_conv.svh: DPI-C imports of the convolution and bit-plane functions of
// tools/cport/fqsr_ops.h (see fqsr_dpi.svh for types and building). Fixed-size unpacked
// arrays, passed to C as pointers to their first element, C order; declare these
// localparams before including it inside a module:
//   FQSR_DPI_X_LEN    N * CIN * H * W     input codes of the conv, NCHW (fqsr_conv_acc_at
//                                         and fqsr_conv_row read the first CIN * H * W)
//   FQSR_DPI_W_LEN    COUT * CIN * K * K  OIHW weight codes
//   FQSR_DPI_B_LEN    COUT                biases
//   FQSR_DPI_ACC_LEN  N * COUT * H * W    accumulators, NCHW
//   FQSR_DPI_FAN_IN   CIN * K * K         one output element's window (plane.row / col)
//   FQSR_DPI_POP_LEN  ROW_BITS * COL_BITS plane-pair popcounts (plane.pop)
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
// ---- bit planes (SPEC 6.7), one output element ----
import "DPI-C" function void fqsr_plane_partials(input longint row[FQSR_DPI_FAN_IN],
                                                 input longint col[FQSR_DPI_FAN_IN], input int fan_in,
                                                 input int row_bits, input int col_bits,
                                                 output int pop[FQSR_DPI_POP_LEN]);
import "DPI-C" pure function longint fqsr_plane_acc(input int pop[FQSR_DPI_POP_LEN], input int row_bits,
                                                    input int row_signed, input int col_bits,
                                                    input int col_signed, input longint bias);
