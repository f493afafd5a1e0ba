/* fqsr_ops.c: the integer ops of fqsr_ref, per op, in C99 (see fqsr_ops.h for the
 * contract: types DPI-C can import, exact inside SPEC 6.4's domain, never undefined
 * behaviour outside it). */
#include <stddef.h>
#include "fqsr_ops.h"

#define I64_MAX 9223372036854775807LL
#define U64_MAX 18446744073709551615ULL

/* |v| as an unsigned value (2^63 for -2^63) */
static unsigned long long magnitude(long long v)
{
    return v < 0 ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v;
}

static unsigned long long mul_sat(unsigned long long a, unsigned long long b)
{
    return (a != 0 && b > U64_MAX / a) ? U64_MAX : a * b;
}

static unsigned long long add_sat(unsigned long long a, unsigned long long b)
{
    return b > U64_MAX - a ? U64_MAX : a + b;
}

/* a uint64 pattern read as two's complement, without implementation-defined conversion */
static long long to_signed(unsigned long long u)
{
    return (u >> 63) ? -(long long)(~u) - 1 : (long long)u;
}

static int shift_ok(int shift) { return shift >= -31 && shift <= 31; }

/* 2^(n-1) for n = 31 - shift, the rounding term (0 for n = 0); shift_ok(shift) */
static unsigned long long half_of(int shift)
{
    int n = 31 - shift;
    return n > 0 ? 1ULL << (n - 1) : 0;
}

long long fqsr_rounding_right_shift(long long v, int n)
{
    long long d, q, r;
    if (n < 0 || n > 62) return FQSR_INVALID;
    if (n == 0) return v;
    /* v = q d + r with 0 <= r < d (floor division; C99's / truncates toward zero, and
     * >> of a negative value is implementation-defined); then floor(v/d + 1/2) is
     * q + (r >= d/2). No intermediate can overflow. */
    d = 1LL << n;
    q = v / d;
    r = v % d;
    if (r < 0) {
        q -= 1;
        r += d;
    }
    return q + (r >= d / 2 ? 1 : 0);
}

/* |x| * mult + 2^(n-1) < 2^63: the product fits int64 directly */
static int product_fits(long long x, int mult, int shift)
{
    return add_sat(mul_sat(magnitude(x), (unsigned long long)mult), half_of(shift))
           <= (unsigned long long)I64_MAX;
}

/* the 16-bit split of M = Mh 2^16 + Ml is exact in int64 for |x| < 2^46 and n >= 16 */
static int split_fits(long long x, int shift)
{
    return magnitude(x) < FQSR_SPLIT_ACC_LIMIT && 31 - shift >= 16;
}

int fqsr_requant_fits(long long x, int mult, int shift)
{
    if (!shift_ok(shift) || mult < 0) return 0;
    return product_fits(x, mult, shift) || split_fits(x, shift);
}

long long fqsr_requant(long long x, int mult, int shift)
{
    long long inner;
    int n;
    if (!fqsr_requant_fits(x, mult, shift)) return FQSR_INVALID;
    n = 31 - shift;
    if (product_fits(x, mult, shift)) return fqsr_rounding_right_shift(x * (long long)mult, n);
    /* floor((x M + 2^(n-1)) / 2^n) = floor((x Mh + floor((x Ml + 2^(n-1)) / 2^16)) / 2^(n-16)):
     * |x Ml| < 2^62 and 2^(n-1) <= 2^61, |x Mh| < 2^61; floor divisions as in
     * fqsr_rounding_right_shift (rrs(v, k) = floor((v + 2^(k-1)) / 2^k)) */
    inner = fqsr_rounding_right_shift(x * (long long)(mult & 0xFFFF) + (1LL << (n - 1)) - (1LL << 15), 16);
    if (n == 16) return x * (long long)(mult >> 16) + inner;
    return fqsr_rounding_right_shift(x * (long long)(mult >> 16) + inner - (1LL << (n - 17)), n - 16);
}

int fqsr_product_bits(long long bound, int mult, int shift)
{
    unsigned long long b = magnitude(bound), m, hi, lo, h, l, t, half;
    int bits = 0;
    if (!shift_ok(shift) || mult < 0) return -1;
    m = (unsigned long long)mult;
    /* b m + 2^(n-1) as 128 bits (h, l): b = hi 2^32 + lo, both products below 2^63 */
    hi = (b >> 32) * m;
    lo = (b & 0xFFFFFFFFULL) * m;
    l = lo + (hi << 32);
    h = (hi >> 32) + (l < lo);
    half = half_of(shift);
    t = l + half;
    h += (t < l);
    l = t;
    if (h) {
        bits = 64;
        while (h) { bits++; h >>= 1; }
    } else {
        while (l) { bits++; l >>= 1; }
    }
    return bits + 1;
}

long long fqsr_clamp(long long v, long long lo, long long hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

long long fqsr_requant_clamp(long long x, int mult, int shift, long long qmin, long long qmax)
{
    long long y = fqsr_requant(x, mult, shift);
    return y == FQSR_INVALID ? FQSR_INVALID : fqsr_clamp(y, qmin, qmax);
}

long long fqsr_conv_output(long long acc, int mult, int shift, int neg_mult, int neg_shift,
                           int neg_sign, long long qmin, long long qmax)
{
    if (acc >= 0) return fqsr_requant_clamp(acc, mult, shift, qmin, qmax);
    if (neg_sign == 1) return fqsr_requant_clamp(acc, neg_mult, neg_shift, qmin, qmax);
    if (neg_sign != -1 || acc == FQSR_INVALID) return FQSR_INVALID;   /* -(-2^63) overflows */
    /* rq(-acc) rounds the true product slope * acc half up (SPEC 6.8) */
    return fqsr_requant_clamp(-acc, neg_mult, neg_shift, qmin, qmax);
}

int fqsr_add_fits(long long a, long long b, int mult, int branch_mult, int shift)
{
    if (!shift_ok(shift) || mult < 0 || branch_mult < 0) return 0;
    return add_sat(add_sat(mul_sat(magnitude(a), (unsigned long long)mult),
                           mul_sat(magnitude(b), (unsigned long long)branch_mult)),
                   half_of(shift)) <= (unsigned long long)I64_MAX;
}

long long fqsr_add(long long a, long long b, int branch_relu, int mult, int branch_mult, int shift,
                   long long qmin, long long qmax)
{
    if (branch_relu && b < 0) b = 0;   /* Eq. 7's ReLU on the branch */
    if (!fqsr_add_fits(a, b, mult, branch_mult, shift)) return FQSR_INVALID;
    return fqsr_clamp(fqsr_rounding_right_shift(a * (long long)mult + b * (long long)branch_mult,
                                                31 - shift), qmin, qmax);
}

/* ---- convolution ------------------------------------------------------------------ */

static int conv_sizes_ok(int cin, int h, int w, int cout, int k)
{
    return cin > 0 && h > 0 && w > 0 && cout > 0 && k > 0 && k % 2 == 1;
}

/* bias + the window sum for (o, oy, ox), arguments already checked; uint64 arithmetic,
 * which is the int64 result whenever that fits and wraps (defined) otherwise */
static long long acc_at(const long long *x, int cin, int h, int w, const long long *weights, int k,
                        long long bias, int o, int oy, int ox)
{
    unsigned long long sum = (unsigned long long)bias;
    int c, ky, kx, pad = k / 2;
    for (c = 0; c < cin; c++) {
        const long long *plane = x + (size_t)c * h * w;
        const long long *taps = weights + ((size_t)o * cin + c) * k * k;
        for (ky = 0; ky < k; ky++) {
            int y = oy + ky - pad;
            if (y < 0 || y >= h) continue;       /* padded row: value 0 */
            for (kx = 0; kx < k; kx++) {
                int xx = ox + kx - pad;
                if (xx < 0 || xx >= w) continue;
                sum += (unsigned long long)taps[ky * k + kx] * (unsigned long long)plane[(size_t)y * w + xx];
            }
        }
    }
    return to_signed(sum);
}

long long fqsr_conv_acc_at(const long long *x, int cin, int h, int w, const long long *weights,
                           int cout, int k, long long bias, int o, int oy, int ox)
{
    if (!conv_sizes_ok(cin, h, w, cout, k) || o < 0 || o >= cout || oy < 0 || oy >= h || ox < 0 || ox >= w)
        return FQSR_INVALID;
    return acc_at(x, cin, h, w, weights, k, bias, o, oy, ox);
}

void fqsr_conv_acc(const long long *x, int n, int cin, int h, int w, const long long *weights,
                   const long long *bias, int cout, int k, long long *acc)
{
    int i, o, oy, ox;
    size_t in_size = (size_t)cin * h * w, out = 0;
    if (n <= 0 || !conv_sizes_ok(cin, h, w, cout, k)) return;
    for (i = 0; i < n; i++)
        for (o = 0; o < cout; o++)
            for (oy = 0; oy < h; oy++)
                for (ox = 0; ox < w; ox++)
                    acc[out++] = acc_at(x + i * in_size, cin, h, w, weights, k, bias[o], o, oy, ox);
}

void fqsr_conv_row(const long long *x, int cin, int h, int w, int k, int oy, int ox, long long *row)
{
    int c, ky, kx, pad = k / 2;
    size_t i = 0;
    if (!conv_sizes_ok(cin, h, w, 1, k) || oy < 0 || oy >= h || ox < 0 || ox >= w) return;
    for (c = 0; c < cin; c++)
        for (ky = 0; ky < k; ky++)
            for (kx = 0; kx < k; kx++) {
                int y = oy + ky - pad, xx = ox + kx - pad;
                row[i++] = (y < 0 || y >= h || xx < 0 || xx >= w) ? 0 : x[((size_t)c * h + y) * w + xx];
            }
}

/* ---- pixel shuffle -------------------------------------------------------------- */

void fqsr_pixel_shuffle(const long long *x, int n, int c, int h, int w, int r, long long *y)
{
    int b, oc, iy, ix, i, j, c_out;
    size_t ho, wo;
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || r <= 0 || c % (r * r) != 0) return;
    c_out = c / (r * r);
    ho = (size_t)h * r;
    wo = (size_t)w * r;
    for (b = 0; b < n; b++)
        for (oc = 0; oc < c_out; oc++)
            for (iy = 0; iy < h; iy++)
                for (ix = 0; ix < w; ix++)
                    for (i = 0; i < r; i++)
                        for (j = 0; j < r; j++)
                            y[(((size_t)b * c_out + oc) * ho + (size_t)iy * r + i) * wo + (size_t)ix * r + j] =
                                x[(((size_t)b * c + (size_t)oc * r * r + (size_t)i * r + j) * h + iy) * w + ix];
}

/* ---- bit planes ----------------------------------------------------------------- */

int fqsr_code_bit(long long code, int m)
{
    if (m < 0 || m > 63) return 0;
    return (int)(((unsigned long long)code >> m) & 1u);
}

long long fqsr_plane_weight(int m, int bits, int is_signed)
{
    long long weight;
    if (bits < 1 || bits > 32 || m < 0 || m >= bits) return FQSR_INVALID;
    weight = 1LL << m;
    return (is_signed && m == bits - 1) ? -weight : weight;
}

void fqsr_plane_partials(const long long *row, const long long *col, int fan_in, int row_bits,
                         int col_bits, int *pop)
{
    int m, p, i;
    if (fan_in < 0 || row_bits < 1 || row_bits > 32 || col_bits < 1 || col_bits > 32) return;
    for (m = 0; m < row_bits; m++)
        for (p = 0; p < col_bits; p++) {
            int count = 0;
            for (i = 0; i < fan_in; i++) count += fqsr_code_bit(row[i], m) & fqsr_code_bit(col[i], p);
            pop[m * col_bits + p] = count;
        }
}

long long fqsr_plane_acc(const int *pop, int row_bits, int row_signed, int col_bits, int col_signed,
                         long long bias)
{
    unsigned long long sum = (unsigned long long)bias;
    int m, p;
    if (row_bits < 1 || row_bits > 32 || col_bits < 1 || col_bits > 32) return FQSR_INVALID;
    for (m = 0; m < row_bits; m++)
        for (p = 0; p < col_bits; p++)
            sum += (unsigned long long)fqsr_plane_weight(m, row_bits, row_signed)
                   * (unsigned long long)fqsr_plane_weight(p, col_bits, col_signed)
                   * (unsigned long long)(long long)pop[m * col_bits + p];
    return to_signed(sum);
}
