/* fqsr_ops.h: the integer ops of fqsr_ref (docs/SPEC.md section 6), one C function per
 * op, for two callers: the C99 port (fqsr_port.c) and SystemVerilog testbenches through
 * DPI-C (tools/hdl/fqsr_dpi.svh imports every function below, with the same names).
 *
 * Types are those DPI-C maps without svdpi.h:
 *   SV int     = C int        (32 bits): multipliers, shifts, signs, sizes, indices, bits
 *   SV longint = C long long  (64 bits): codes, accumulators, biases, results
 *   an unpacked SV array of fixed size (input longint x[N]) = a C pointer to its first
 *   element (const long long *; output int pop[N] = int *), C order (last index fastest).
 * Nothing here allocates, prints or keeps state; every function is reentrant.
 *
 * Domain. Requantization is exact where |x| * M + 2^(n-1) < 2^63 (int64 products) and,
 * beyond (SPEC 6.4's PRODUCT_BITS > 64), where |x| < 2^46 and n = 31 - shift >= 16, by the
 * 16-bit split of M (portable C99, int64 only). Inside that domain every function computes
 * the SPEC's result exactly. Outside it (a shift out of [-31, 31], an input the SPEC rejects), the
 * requantizing functions return FQSR_INVALID (-2^63, never a valid result, so a
 * testbench comparing against it fails loudly) and the accumulating ones wrap modulo
 * 2^64; none of them has undefined behaviour for any argument (checked under UBSan).
 * fqsr_requant_fits and fqsr_add_fits say whether an input is inside. Array sizes and
 * indices must describe the arrays passed; the array functions check that indices lie
 * inside the shapes given and return FQSR_INVALID (or do nothing) otherwise.
 */
#ifndef FQSR_OPS_H
#define FQSR_OPS_H

#ifdef __cplusplus
extern "C" {
#endif

/* -2^63: returned where the SPEC defines no result. */
#define FQSR_INVALID (-9223372036854775807LL - 1)

/* |x| below 2^46: the 16-bit split of the multiplier is exact in int64 (SPEC 6.4) */
#define FQSR_SPLIT_ACC_LIMIT (1ULL << 46)

/* ---- rounding and requantization (SPEC 6.2, 6.4) ------------------------------ */

/* floor(v / 2^n + 1/2), round half up (ties toward +infinity: 3/2 -> 2, -3/2 -> -1),
 * exact for every v; n = 0 returns v. n outside [0, 62]: FQSR_INVALID. */
long long fqsr_rounding_right_shift(long long v, int n);

/* 1 if requantizing x with (mult, shift) is exact here: shift in [-31, 31], mult >= 0, and
 * |x| * mult + 2^(30 - shift) < 2^63, or |x| < 2^46 and 31 - shift >= 16 (the split). Else 0. */
int fqsr_requant_fits(long long x, int mult, int shift);

/* round_half_up(x * mult / 2^(31 - shift)), single rounding, no clamp
 * (multiply_by_quantized_multiplier); products past 64 bits by the 16-bit split
 * M = Mh 2^16 + Ml: floor((x Mh + floor((x Ml + 2^(n-1)) / 2^16)) / 2^(n-16)).
 * FQSR_INVALID unless fqsr_requant_fits. */
long long fqsr_requant(long long x, int mult, int shift);

/* PRODUCT_BITS (SPEC 6.4): bit_length(|bound| * mult + 2^(30 - shift)) + 1, the signed
 * width of the widest requantization product for |x| <= |bound|; -1 for a shift outside
 * [-31, 31] or mult < 0. */
int fqsr_product_bits(long long bound, int mult, int shift);

/* min(max(v, lo), hi): saturation to a code range. */
long long fqsr_clamp(long long v, long long lo, long long hi);

/* the requant op: clamp(fqsr_requant(x, mult, shift), qmin, qmax). */
long long fqsr_requant_clamp(long long x, int mult, int shift, long long qmin, long long qmax);

/* A conv's output code from its accumulator (SPEC 6.8 step 4, PReLU folded in):
 * acc >= 0: clamp(requant(acc, mult, shift)); acc < 0: clamp(requant(neg_sign * acc,
 * neg_mult, neg_shift)). neg_sign is +1 or -1 (the sign of the PReLU slope); without
 * PReLU pass (mult, shift, +1) twice. FQSR_INVALID outside the domain. */
long long fqsr_conv_output(long long acc, int mult, int shift, int neg_mult, int neg_shift,
                           int neg_sign, long long qmin, long long qmax);

/* ---- residual add (SPEC 6.8, Eq. 7) -------------------------------------------- */

/* 1 if |a| * mult + |b| * branch_mult + 2^(30 - shift) < 2^63 (shift in [-31, 31],
 * multipliers >= 0): the add below is exact in int64. Else 0. */
int fqsr_add_fits(long long a, long long b, int mult, int branch_mult, int shift);

/* b' = max(b, 0) if branch_relu else b;
 * clamp(round_half_up((a * mult + b' * branch_mult) / 2^(31 - shift)), qmin, qmax):
 * both products share one shift and one rounding. FQSR_INVALID outside the domain. */
long long fqsr_add(long long a, long long b, int branch_relu, int mult, int branch_mult, int shift,
                   long long qmin, long long qmax);

/* ---- convolution (SPEC 6.6: same, stride 1, zero padding k / 2, k odd) ---------- */

/* One accumulator: bias + sum_{c, ky, kx} w[o, c, ky, kx] * x[c, oy + ky - k/2, ox + kx - k/2],
 * a tap outside the image contributing 0. x: one image, C x H x W (cin channels);
 * weights: OIHW, cout x cin x k x k; bias: the value for output channel o.
 * FQSR_INVALID if a size is not positive, k is even, or (o, oy, ox) is outside
 * cout x h x w. The sum wraps modulo 2^64 if it leaves int64 (a caller proves the bound). */
long long fqsr_conv_acc_at(const long long *x, int cin, int h, int w, const long long *weights,
                           int cout, int k, long long bias, int o, int oy, int ox);

/* Every accumulator: acc (n x cout x h x w, NCHW) from x (n x cin x h x w, NCHW), OIHW
 * weights and bias (cout). Does nothing if a size is not positive or k is even. */
void fqsr_conv_acc(const long long *x, int n, int cin, int h, int w, const long long *weights,
                   const long long *bias, int cout, int k, long long *acc);

/* The fan_in = cin * k * k input codes accumulator (o, oy, ox) reads, ordered (c, ky, kx)
 * like a flattened OIHW weight row, padded taps 0: the vectors' plane.row. x as above.
 * Does nothing if a size is not positive, k is even or (oy, ox) is outside h x w. */
void fqsr_conv_row(const long long *x, int cin, int h, int w, int k, int oy, int ox, long long *row);

/* ---- pixel shuffle (SPEC 6.8) --------------------------------------------------- */

/* y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w]: x is n x c x h x w with c
 * divisible by r^2, y is n x (c / r^2) x (h r) x (w r). Codes move unchanged.
 * Does nothing if a size is not positive or r^2 does not divide c. */
void fqsr_pixel_shuffle(const long long *x, int n, int c, int h, int w, int r, long long *y);

/* ---- bit planes (SPEC 6.7, Eq. 2) ----------------------------------------------- */

/* Bit m (LSB = 0) of code's two's complement pattern: 0 or 1 (m outside [0, 63]: 0). */
int fqsr_code_bit(long long code, int m);

/* The weight of plane m of a bits-wide operand: 2^m, but -2^(bits-1) for the top plane
 * of a signed one. FQSR_INVALID unless 0 <= m < bits <= 32. */
long long fqsr_plane_weight(int m, int bits, int is_signed);

/* P[m, p] = #{i : bit m of row[i] and bit p of col[i] are both 1}, row_bits x col_bits,
 * written to pop (row-major). Does nothing if fan_in < 0 or a width is outside [1, 32]. */
void fqsr_plane_partials(const long long *row, const long long *col, int fan_in, int row_bits,
                         int col_bits, int *pop);

/* bias + sum_{m, p} weight_m * weight_p * pop[m, p]: the accumulator the planes rebuild
 * (equal to bias + sum_i row[i] * col[i] for codes of the declared widths).
 * FQSR_INVALID if a width is outside [1, 32]. */
long long fqsr_plane_acc(const int *pop, int row_bits, int row_signed, int col_bits, int col_signed,
                         long long bias);

#ifdef __cplusplus
}
#endif

#endif /* FQSR_OPS_H */
