// fqsr_dpi_shuffle.svh: the DPI-C import of fqsr_pixel_shuffle (tools/cport/fqsr_ops.h;
// see fqsr_dpi.svh). Declare before including it inside a module:
//   FQSR_DPI_SHUF_LEN  elements of the shuffle's input, N * C * H * W (= its output's)
// ---- pixel shuffle ----
import "DPI-C" function void fqsr_pixel_shuffle(input longint x[FQSR_DPI_SHUF_LEN], input int n, input int c,
                                                input int h, input int w, input int r,
                                                output longint y[FQSR_DPI_SHUF_LEN]);
