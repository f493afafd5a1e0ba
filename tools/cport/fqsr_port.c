/* fqsr_port: the fqsr_ref integer-only network in C99, written from docs/SPEC.md
 * and vectors/README.md alone, to prove that they are enough to build a port.
 *
 *     fqsr_port GOLDEN_DIR PORT_DIR
 *
 * Reads GOLDEN_DIR/model.txt (the graph), weights/<conv>.w.bin and .b.bin, and
 * for every stimulus S only its input codes S/image.in.bin. Runs every op with
 * int64 arithmetic and writes every op's output as PORT_DIR/S/<tensor>.bin and
 * every conv's accumulators as PORT_DIR/S/<conv>.acc.bin, for
 * `python -m fqsr_ref.verify GOLDEN_DIR PORT_DIR` to check.
 *
 * model.txt is trusted for nothing. Before anything is written it is checked
 * completely: names plain ([A-Za-z0-9_.-], no "..", so every path stays inside
 * GOLDEN_DIR and PORT_DIR), every number within the SPEC's ranges (multipliers
 * [0, 2^31 - 1], shifts [-31, 31] so that n = 31 - shift is in [0, 62], NEG_SIGN
 * +-1, BRANCH_RELU 0/1, shuffle factor 1..16), dimensions positive and bounded,
 * every op reading tensors computed before it with agreeing shapes, the weight,
 * bias and input files of the declared size and code range, and no sum or product
 * able to leave int64. A failure is one line on stderr naming the line of
 * model.txt, and exit 2. Where a conv's accumulators cannot be proven in range
 * from the declared ranges alone (int64 accumulators), every stimulus is first
 * run without writing, so a bad model writes nothing there either.
 *
 * The arithmetic of every op (rounding, requantization, PReLU, add, conv accumulation,
 * pixel shuffle) is in fqsr_ops.c, a library with plain C types that SystemVerilog
 * testbenches also call through DPI-C (fqsr_ops.h); this file parses, validates,
 * runs the graph and writes files.
 *
 * libc only; mkdir() is the one POSIX call (C99 has no way to make a directory).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fqsr_ops.h"

#define NAME_LEN 64                      /* names: at most 63 characters */
#define PATH_LEN 1024
#define ARG_LEN (PATH_LEN - 3 * NAME_LEN - 64)  /* longest GOLDEN_DIR / PORT_DIR */
#define LINE_LEN 1024
#define MAX_FIELDS 24
#define MAX_TENSORS 256
#define MAX_OPS 256
#define MAX_STIMULI 32
#define MAX_DIM 65536                    /* N, C, H, W, COUT, CIN */
#define MAX_K 63                         /* kernel size, odd */
#define MAX_ELEMS ((int64_t)1 << 28)     /* elements of one tensor or weight array */
#define MAX_FACTOR 16                    /* pixel shuffle */
#define MULT_MAX 2147483647LL            /* multipliers: int32, >= 0 */
#define SHIFT_MIN (-31)                  /* n = 31 - shift in [0, 62] (SPEC 6.4) */
#define SHIFT_MAX 31

enum dtype { U8, I8, I16, I32, I64 };
static const char *DTYPE_NAMES[] = {"uint8", "int8", "int16", "int32", "int64"};
static const int DTYPE_BYTES[] = {1, 1, 2, 4, 8};
static const int64_t DTYPE_MIN[] = {0, -128, -32768, -2147483647LL - 1, INT64_MIN};
static const int64_t DTYPE_MAX[] = {255, 127, 32767, 2147483647LL, INT64_MAX};
#define CODE_DTYPES ((1 << U8) | (1 << I8) | (1 << I16) | (1 << I32))
#define WEIGHT_DTYPES ((1 << I8) | (1 << I16) | (1 << I32))
#define WIDE_DTYPES ((1 << I32) | (1 << I64))

typedef struct {
    char name[NAME_LEN];
    int dtype;
    int64_t qmin, qmax;
    int line;           /* of model.txt */
    int n, c, h, w;     /* NCHW shape, set when the tensor is computed */
    long long *data;    /* NULL until computed */
} tensor_t;

enum op_kind { CONV, REQUANT, ADD, SHUFFLE };

typedef struct {
    int kind;
    char name[NAME_LEN];
    int line;                            /* of model.txt */
    int in, out, branch;                 /* tensor indices (branch: add only) */
    int cout, cin, k, acc_dtype;         /* conv */
    long long *w, *b;                    /* conv: OIHW weight codes, bias (cout) */
    long long *pad;                      /* conv: code of a tap outside the image, per input
                                          * channel (PAD_VALUE fields), or NULL: 0 */
    int64_t mult, neg_mult;              /* int32 multipliers */
    int shift, neg_shift, neg_sign;      /* real = sign * mult * 2^(shift - 31) */
    int relu;                            /* add: ReLU on the branch (Eq. 7) */
    int64_t branch_mult;                 /* add */
    int factor;                          /* shuffle */
} op_t;

typedef struct { char name[NAME_LEN]; int line; int n, c, h, w; } stimulus_t;

static tensor_t tensors[MAX_TENSORS];
static op_t ops[MAX_OPS];
static stimulus_t stimuli[MAX_STIMULI];
static int n_tensors, n_ops, n_stimuli;
static char model_path[PATH_LEN];
static int dry_run_needed;   /* some conv's accumulators are not proven in range statically */
static int model_version;    /* 1, or 2: PRODUCT_BITS ends the conv, requant and add lines */

/* One line on stderr, exit 2. line > 0 names the line of model.txt. */
static void fail(int line, const char *fmt, ...)
{
    va_list ap;
    if (line > 0) fprintf(stderr, "fqsr_port: %s line %d: ", model_path, line);
    else fprintf(stderr, "fqsr_port: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static void *checked_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size);
    if (!p) fail(0, "out of memory (%lu x %lu bytes)", (unsigned long)count, (unsigned long)size);
    return p;
}

/* ---- arithmetic (docs/SPEC.md, integer section) -------------------------- */

/* 2^(n-1) for n = 31 - shift, the rounding term (0 for n = 0). */
static uint64_t half_of(int shift)
{
    int n = 31 - shift;
    return n > 0 ? (uint64_t)1 << (n - 1) : 0;
}

/* a * b, saturating at UINT64_MAX. */
static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    return (a != 0 && b > UINT64_MAX / a) ? UINT64_MAX : a * b;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

static uint64_t magnitude(int64_t v)
{
    return v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
}

/* the largest |code| of a tensor's declared range */
static uint64_t max_abs(const tensor_t *t)
{
    uint64_t a = magnitude(t->qmin), b = magnitude(t->qmax);
    return a > b ? a : b;
}

static const op_t *cur_op;            /* for run-time messages */
static const stimulus_t *cur_stimulus;

/* a requantization the SPEC rejects (6.4: |x| * M + 2^(n-1) >= 2^63) fails loudly */
static void check_requant(int64_t x, int64_t mult, int shift)
{
    if (!fqsr_requant_fits(x, (int)mult, shift))
        fail(cur_op ? cur_op->line : 0, "%s: stimulus %s: accumulator %lld times multiplier %lld "
             "leaves int64 (SPEC 6.4)", cur_op ? cur_op->name : "?",
             cur_stimulus ? cur_stimulus->name : "?", (long long)x, (long long)mult);
}

/* ---- files ---------------------------------------------------------------- */

/* count elements of dtype, little-endian two's complement, into int64; the file
 * must hold exactly that many bytes (checked before anything is allocated) and
 * every value must lie in [lo, hi]. line and what name the culprit in errors. */
static void read_bin(int line, const char *what, const char *path, int dtype, size_t count,
                     long long *dst, int64_t lo, int64_t hi)
{
    size_t size = DTYPE_BYTES[dtype], i, j;
    unsigned char *buf;
    long bytes;
    FILE *f = fopen(path, "rb");
    if (!f) fail(line, "%s: cannot open %s", what, path);
    if (fseek(f, 0, SEEK_END) != 0 || (bytes = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        fail(line, "%s: cannot read %s", what, path);
    }
    if ((unsigned long)bytes != (unsigned long)count * size) {
        fclose(f);
        fail(line, "%s: %s holds %ld bytes, expected %lu (%lu x %s)", what, path, bytes,
             (unsigned long)(count * size), (unsigned long)count, DTYPE_NAMES[dtype]);
    }
    buf = checked_calloc(count, size);
    if (fread(buf, size, count, f) != count || fgetc(f) != EOF) {
        free(buf);
        fclose(f);
        fail(line, "%s: cannot read %s", what, path);
    }
    fclose(f);
    for (i = 0; i < count; i++) {
        uint64_t u = 0;
        int64_t v;
        for (j = 0; j < size; j++) u |= (uint64_t)buf[i * size + j] << (8 * j);
        if (dtype != U8 && size < 8 && (u >> (8 * size - 1)))
            u |= ~(uint64_t)0 << (8 * size);          /* sign-extend */
        /* uint64 -> int64 without relying on implementation-defined conversion */
        v = (u >> 63) ? -(int64_t)(~u) - 1 : (int64_t)u;
        if (v < lo || v > hi) {
            free(buf);
            fail(line, "%s: %s element %lu is %lld, outside [%lld, %lld]", what, path,
                 (unsigned long)i, (long long)v, (long long)lo, (long long)hi);
        }
        if (dst) dst[i] = v;
    }
    free(buf);
}

static void write_bin(const char *path, int dtype, size_t count, const long long *src)
{
    size_t size = DTYPE_BYTES[dtype], i, j;
    unsigned char *buf = checked_calloc(count, size);
    FILE *f;
    for (i = 0; i < count; i++) {
        uint64_t u = (uint64_t)src[i];                  /* two's complement, mod 2^64 */
        for (j = 0; j < size; j++) buf[i * size + j] = (unsigned char)(u >> (8 * j));
    }
    f = fopen(path, "wb");
    if (!f || fwrite(buf, size, count, f) != count || fclose(f) != 0) {
        free(buf);
        fail(0, "cannot write %s", path);
    }
    free(buf);
}

/* a/b/c with b and c at most NAME_LEN + 16 characters and a at most ARG_LEN
 * (checked in main): never truncated. */
static void join(char *out, const char *a, const char *b, const char *c)
{
    if (snprintf(out, PATH_LEN, "%s/%s%s", a, b, c) >= PATH_LEN) fail(0, "path too long: %s", a);
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0777) != 0 && errno != EEXIST) fail(0, "cannot create directory %s", path);
}

/* ---- model.txt: fields ---------------------------------------------------- */

static int line_no;   /* the line being parsed */

/* split on blanks; returns the number of fields (MAX_FIELDS + 1: too many) */
static int split(char *line, char **field)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) return n;
        if (n == MAX_FIELDS) return n + 1;
        field[n++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') p++;
        if (*p) *p++ = '\0';
    }
}

/* a decimal integer in [lo, hi] */
static int64_t int_field(const char *s, const char *what, int64_t lo, int64_t hi)
{
    const char *p = s;
    char *end;
    long long v;
    if (*p == '-') p++;
    if (*p < '0' || *p > '9') fail(line_no, "%s '%.40s' is not a decimal integer", what, s);
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*end != '\0') fail(line_no, "%s '%.40s' is not a decimal integer", what, s);
    if (errno == ERANGE || v < lo || v > hi)
        fail(line_no, "%s %.40s out of range [%lld, %lld]", what, s, (long long)lo, (long long)hi);
    return v;
}

/* a plain name: 1..63 of [A-Za-z0-9_.-], no "..", not "." (a file or directory
 * name that stays where it is put) */
static void name_field(char *dst, const char *s, const char *what)
{
    size_t i, len = strlen(s);
    if (len >= NAME_LEN) fail(line_no, "%s '%.40s...' is longer than %d characters", what, s, NAME_LEN - 1);
    for (i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
              || ch == '_' || ch == '.' || ch == '-'))
            fail(line_no, "%s '%s' is not a plain name (letters, digits, '_', '.', '-'; no '/')", what, s);
    }
    if (strstr(s, "..") || strcmp(s, ".") == 0)
        fail(line_no, "%s '%s' is not a plain name ('.' or '..' would leave its directory)", what, s);
    strcpy(dst, s);
}

static int dtype_field(const char *s, const char *what, int allowed)
{
    int i;
    for (i = 0; i <= I64; i++)
        if (strcmp(s, DTYPE_NAMES[i]) == 0) {
            if (!(allowed & (1 << i))) break;
            return i;
        }
    fail(line_no, "%s '%.40s' is not one of%s%s%s%s%s", what, s,
         allowed & (1 << U8) ? " uint8" : "", allowed & (1 << I8) ? " int8" : "",
         allowed & (1 << I16) ? " int16" : "", allowed & (1 << I32) ? " int32" : "",
         allowed & (1 << I64) ? " int64" : "");
    return -1;
}

static int find_tensor(const char *name)
{
    int i;
    for (i = 0; i < n_tensors; i++)
        if (strcmp(tensors[i].name, name) == 0) return i;
    return -1;
}

/* a tensor named by an op: must be declared by an earlier tensor line */
static int tensor_field(const char *s, const char *what)
{
    char name[NAME_LEN];
    int i;
    name_field(name, s, what);
    if ((i = find_tensor(name)) < 0) fail(line_no, "%s '%s' is not declared by a tensor line", what, name);
    return i;
}

static int dim_field(const char *s, const char *what, int64_t hi)
{
    return (int)int_field(s, what, 1, hi);
}

static void expect_fields(int got, int want, int alt, const char *kind, const char *layout)
{
    char alt_text[48] = "";
    if (alt != want) snprintf(alt_text, sizeof alt_text, " (or %d, without the appended fields)", alt);
    if (got != want && got != alt)
        fail(line_no, "this '%s' line has %s%d fields, expected %d%s: %s", kind, got > MAX_FIELDS ? "over " : "",
             got > MAX_FIELDS ? MAX_FIELDS : got, want, alt_text, layout);
}

/* ---- model.txt: lines ----------------------------------------------------- */

static int produced[MAX_TENSORS];   /* computed by an earlier op (or the input image) */

static void parse_tensor(char **f, int nf)
{
    tensor_t *t = &tensors[n_tensors];
    expect_fields(nf, 7, 5, "tensor", "tensor NAME DTYPE QMIN QMAX BITS SIGNED");
    name_field(t->name, f[1], "tensor name");
    if (find_tensor(t->name) >= 0) fail(line_no, "tensor '%s' is declared twice", t->name);
    t->dtype = dtype_field(f[2], "tensor dtype", CODE_DTYPES);
    t->qmin = int_field(f[3], "QMIN", DTYPE_MIN[t->dtype], DTYPE_MAX[t->dtype]);
    t->qmax = int_field(f[4], "QMAX", DTYPE_MIN[t->dtype], DTYPE_MAX[t->dtype]);
    if (t->qmin > t->qmax) fail(line_no, "tensor '%s': QMIN %lld > QMAX %lld", t->name,
                                (long long)t->qmin, (long long)t->qmax);
    if (nf == 7) {
        int bits = (int)int_field(f[5], "BITS", 1, 8 * DTYPE_BYTES[t->dtype]);
        int is_signed = (int)int_field(f[6], "SIGNED", 0, 1);
        int64_t lo = is_signed ? -((int64_t)1 << (bits - 1)) : 0;
        int64_t hi = is_signed ? ((int64_t)1 << (bits - 1)) - 1 : ((int64_t)1 << bits) - 1;
        if (t->qmin < lo || t->qmax > hi)
            fail(line_no, "tensor '%s': [%lld, %lld] does not fit %d-bit %s codes", t->name,
                 (long long)t->qmin, (long long)t->qmax, bits, is_signed ? "signed" : "unsigned");
    }
    t->line = line_no;
    n_tensors++;
}

static void parse_stimulus(char **f, int nf)
{
    stimulus_t *s = &stimuli[n_stimuli];
    int i;
    expect_fields(nf, 6, 6, "stimulus", "stimulus NAME N C H W");
    name_field(s->name, f[1], "stimulus name");
    for (i = 0; i < n_stimuli; i++)
        if (strcmp(stimuli[i].name, s->name) == 0) fail(line_no, "stimulus '%s' is listed twice", s->name);
    s->n = dim_field(f[2], "N", MAX_DIM);
    s->c = dim_field(f[3], "C", MAX_DIM);
    s->h = dim_field(f[4], "H", MAX_DIM);
    s->w = dim_field(f[5], "W", MAX_DIM);
    if ((int64_t)s->n * s->c * s->h * s->w > MAX_ELEMS)
        fail(line_no, "stimulus '%s': %d x %d x %d x %d is more than 2^28 elements", s->name,
             s->n, s->c, s->h, s->w);
    s->line = line_no;
    n_stimuli++;
}

/* op name (unique among ops), input and output tensors; the input must already be
 * computed, the output not yet (every tensor is made once, by one op) */
static void op_common(op_t *op, int kind, const char *name, const char *in, const char *out)
{
    int i;
    op->kind = kind;
    op->line = line_no;
    name_field(op->name, name, "op name");
    for (i = 0; i < n_ops; i++)
        if (strcmp(ops[i].name, op->name) == 0) fail(line_no, "op '%s' is defined twice", op->name);
    op->in = tensor_field(in, "input tensor");
    op->out = tensor_field(out, "output tensor");
    if (!produced[op->in])
        fail(line_no, "%s reads '%s' before any op computes it", op->name, tensors[op->in].name);
}

static void op_output(op_t *op)
{
    if (produced[op->out])
        fail(line_no, "%s writes '%s', which %s", op->name, tensors[op->out].name,
             strcmp(tensors[op->out].name, "image.in") == 0 ? "is the input image"
                                                             : "an earlier op already computes");
    produced[op->out] = 1;
    n_ops++;
}

/* PRODUCT_BITS of a conv (SPEC 6.4): the wider side of acc_bound * M + 2^(n-1) */
static int product_bits_of(uint64_t bound, const op_t *op)
{
    int pos = fqsr_product_bits((long long)bound, (int)op->mult, op->shift);
    int neg = fqsr_product_bits((long long)bound, (int)op->neg_mult, op->neg_shift);
    return pos > neg ? pos : neg;
}

/* the PRODUCT_BITS field must be what the op's own numbers give */
static void check_product_bits(const char *field, int want)
{
    if (int_field(field, "PRODUCT_BITS", 2, 128) != want)
        fail(line_no, "PRODUCT_BITS %s is not %d, the width of the op's widest product (SPEC 6.4)", field, want);
}

static void parse_conv(const char *dir, char **f, int nf)
{
    op_t *op = &ops[n_ops];
    char path[PATH_LEN], file[NAME_LEN + 16], what[NAME_LEN + 32];
    int wdt, bdt, o;
    size_t count, i, fan_in;
    int64_t wlo, whi;
    uint64_t in_max, bound = 0, acc_bound;
    int fields = model_version >= 2 ? 20 : 19;   /* version 2: PRODUCT_BITS after ACC_BOUND */
    int pad_fields = nf > fields && nf <= MAX_FIELDS ? nf - fields : 0;   /* PAD_VALUE x CIN */
    expect_fields(nf - pad_fields, fields, model_version >= 2 ? 20 : 15, "conv", "conv NAME INPUT OUTPUT COUT CIN "
                  "K W_DTYPE B_DTYPE ACC_DTYPE M SHIFT NEG_M NEG_SHIFT NEG_SIGN W_BITS PAD STRIDE ACC_BOUND "
                  "[PRODUCT_BITS] [PAD_VALUE x CIN]");
    op_common(op, CONV, f[1], f[2], f[3]);
    snprintf(file, sizeof file, "%.63s.acc", op->name);
    if (find_tensor(file) >= 0)
        fail(line_no, "conv '%s': its accumulator file %s.bin would be tensor '%s''s", op->name, file, file);
    op->cout = dim_field(f[4], "COUT", MAX_DIM);
    op->cin = dim_field(f[5], "CIN", MAX_DIM);
    op->k = dim_field(f[6], "K", MAX_K);
    if (op->k % 2 == 0) fail(line_no, "K %d is even (a 'same' convolution needs an odd kernel)", op->k);
    wdt = dtype_field(f[7], "W_DTYPE", WEIGHT_DTYPES);
    bdt = dtype_field(f[8], "B_DTYPE", WIDE_DTYPES);
    op->acc_dtype = dtype_field(f[9], "ACC_DTYPE", WIDE_DTYPES);
    op->mult = int_field(f[10], "M", 0, MULT_MAX);
    op->shift = (int)int_field(f[11], "SHIFT", SHIFT_MIN, SHIFT_MAX);
    op->neg_mult = int_field(f[12], "NEG_M", 0, MULT_MAX);
    op->neg_shift = (int)int_field(f[13], "NEG_SHIFT", SHIFT_MIN, SHIFT_MAX);
    op->neg_sign = (int)int_field(f[14], "NEG_SIGN", -1, 1);
    if (op->neg_sign == 0) fail(line_no, "NEG_SIGN 0 is neither -1 nor 1");
    wlo = DTYPE_MIN[wdt];
    whi = DTYPE_MAX[wdt];
    if (nf - pad_fields >= 19) {
        int w_bits = (int)int_field(f[15], "W_BITS", 2, 8 * DTYPE_BYTES[wdt]);
        whi = ((int64_t)1 << (w_bits - 1)) - 1;        /* the narrow grid */
        wlo = -whi;
        if (int_field(f[16], "PAD", 0, MAX_K) != op->k / 2)
            fail(line_no, "PAD %s is not K / 2 = %d", f[16], op->k / 2);
        int_field(f[17], "STRIDE", 1, 1);
        acc_bound = (uint64_t)int_field(f[18], "ACC_BOUND", 0, INT64_MAX);
        if (model_version >= 2) check_product_bits(f[19], product_bits_of(acc_bound, op));
    }
    if (pad_fields) {
        const tensor_t *x = &tensors[op->in];
        if (pad_fields != op->cin)
            fail(line_no, "conv '%s': %d PAD_VALUE fields, expected one per input channel (CIN %d)",
                 op->name, pad_fields, op->cin);
        op->pad = checked_calloc((size_t)op->cin, sizeof(long long));
        for (i = 0; i < (size_t)op->cin; i++)   /* a code of the input: the bound below holds */
            op->pad[i] = int_field(f[fields + i], "PAD_VALUE", x->qmin, x->qmax);
    }
    fan_in = (size_t)op->cin * op->k * op->k;
    if ((int64_t)op->cout * (int64_t)fan_in > MAX_ELEMS)
        fail(line_no, "conv '%s': %d x %d x %d x %d weights are more than 2^28", op->name,
             op->cout, op->cin, op->k, op->k);
    count = (size_t)op->cout * fan_in;
    op->w = checked_calloc(count, sizeof(int64_t));
    op->b = checked_calloc((size_t)op->cout, sizeof(int64_t));
    snprintf(what, sizeof what, "conv '%.63s' weights", op->name);
    snprintf(file, sizeof file, "%.63s.w.bin", op->name);
    join(path, dir, "weights/", file);
    read_bin(line_no, what, path, wdt, count, op->w, wlo, whi);
    snprintf(what, sizeof what, "conv '%.63s' bias", op->name);
    snprintf(file, sizeof file, "%.63s.b.bin", op->name);
    join(path, dir, "weights/", file);
    read_bin(line_no, what, path, bdt, (size_t)op->cout, op->b, DTYPE_MIN[bdt], DTYPE_MAX[bdt]);
    /* every partial sum of output channel o is at most |b[o]| + sum |w[o]| * max|x| */
    in_max = max_abs(&tensors[op->in]);
    for (o = 0; o < op->cout; o++) {
        uint64_t s = 0;
        for (i = 0; i < fan_in; i++) s = add_sat(s, magnitude(op->w[o * fan_in + i]));
        s = add_sat(mul_sat(s, in_max), magnitude(op->b[o]));
        if (s > bound) bound = s;
    }
    if (bound > (uint64_t)INT64_MAX)
        fail(line_no, "conv '%s': accumulators can reach %llu, beyond int64", op->name,
             (unsigned long long)bound);
    /* requantization is exact for every |acc| <= bound on both sides (SPEC 6.4): int64
     * products, or beyond 64 bits the 16-bit split of M (|acc| < 2^46, n >= 16) */
    if (!fqsr_requant_fits((long long)bound, (int)op->mult, op->shift)
        || !fqsr_requant_fits((long long)bound, (int)op->neg_mult, op->neg_shift))
        fail(line_no, "conv '%s': requantization products need %d bits (accumulators up to %llu); "
             "beyond 64 bits the 16-bit split of M needs |acc| < 2^46 and 31 - SHIFT >= 16 (SPEC 6.4)",
             op->name, product_bits_of(bound, op), (unsigned long long)bound);
    /* proven here, or checked by the dry run: the accumulator fits ACC_DTYPE */
    if (bound > (uint64_t)DTYPE_MAX[op->acc_dtype])
        dry_run_needed = 1;
    op_output(op);
}

static void parse_requant(char **f, int nf)
{
    op_t *op = &ops[n_ops];
    expect_fields(nf, model_version >= 2 ? 7 : 6, model_version >= 2 ? 7 : 6, "requant",
                  model_version >= 2 ? "requant NAME INPUT OUTPUT M SHIFT PRODUCT_BITS" : "requant NAME INPUT OUTPUT M SHIFT");
    op_common(op, REQUANT, f[1], f[2], f[3]);
    op->mult = int_field(f[4], "M", 0, MULT_MAX);
    op->shift = (int)int_field(f[5], "SHIFT", SHIFT_MIN, SHIFT_MAX);
    if (model_version >= 2)
        check_product_bits(f[6], fqsr_product_bits((long long)max_abs(&tensors[op->in]), (int)op->mult, op->shift));
    /* codes are at most 2^31 (int32), M < 2^31, 2^(n-1) <= 2^61: below 2^63 */
    op_output(op);
}

static void parse_add(char **f, int nf)
{
    op_t *op = &ops[n_ops];
    uint64_t sum;
    expect_fields(nf, model_version >= 2 ? 10 : 9, model_version >= 2 ? 10 : 9, "add",
                  model_version >= 2 ? "add NAME INPUT BRANCH OUTPUT BRANCH_RELU M BRANCH_M SHIFT PRODUCT_BITS"
                                     : "add NAME INPUT BRANCH OUTPUT BRANCH_RELU M BRANCH_M SHIFT");
    op_common(op, ADD, f[1], f[2], f[4]);
    op->branch = tensor_field(f[3], "branch tensor");
    if (!produced[op->branch])
        fail(line_no, "%s reads '%s' before any op computes it", op->name, tensors[op->branch].name);
    op->relu = (int)int_field(f[5], "BRANCH_RELU", 0, 1);
    op->mult = int_field(f[6], "M", 0, MULT_MAX);
    op->branch_mult = int_field(f[7], "BRANCH_M", 0, MULT_MAX);
    op->shift = (int)int_field(f[8], "SHIFT", SHIFT_MIN, SHIFT_MAX);
    /* each product is below 2^62 (codes <= 2^31): no wrap in uint64 */
    sum = max_abs(&tensors[op->in]) * (uint64_t)op->mult
          + max_abs(&tensors[op->branch]) * (uint64_t)op->branch_mult + half_of(op->shift);
    if (sum > (uint64_t)INT64_MAX)
        fail(line_no, "add '%s': |in| * M + |branch| * BRANCH_M + 2^(n-1) can reach %llu, beyond int64",
             op->name, (unsigned long long)sum);
    if (model_version >= 2) {   /* PRODUCT_BITS: the branch after Eq. 7's ReLU is at most QMAX */
        const tensor_t *b = &tensors[op->branch];
        uint64_t b_max = op->relu ? (b->qmax > 0 ? (uint64_t)b->qmax : 0) : max_abs(b), width = 1;
        sum = max_abs(&tensors[op->in]) * (uint64_t)op->mult + b_max * (uint64_t)op->branch_mult
              + half_of(op->shift);
        while (sum) { width++; sum >>= 1; }
        check_product_bits(f[9], (int)width);
    }
    op_output(op);
}

static void parse_shuffle(char **f, int nf)
{
    op_t *op = &ops[n_ops];
    const tensor_t *x, *y;
    expect_fields(nf, 5, 5, "shuffle", "shuffle NAME INPUT OUTPUT FACTOR");
    op_common(op, SHUFFLE, f[1], f[2], f[3]);
    op->factor = (int)int_field(f[4], "FACTOR", 1, MAX_FACTOR);
    x = &tensors[op->in];
    y = &tensors[op->out];
    if (x->qmin < y->qmin || x->qmax > y->qmax)   /* codes move unchanged */
        fail(line_no, "shuffle '%s': input range [%lld, %lld] does not fit the output's [%lld, %lld]",
             op->name, (long long)x->qmin, (long long)x->qmax, (long long)y->qmin, (long long)y->qmax);
    op_output(op);
}

/* Shapes of every tensor for stimulus s, op by op: the same rules run_stimulus
 * applies, checked before anything is allocated or written. */
static void check_shapes(const stimulus_t *s)
{
    int i;
    for (i = 0; i < n_tensors; i++) tensors[i].n = 0;
    {
        tensor_t *image = &tensors[find_tensor("image.in")];
        image->n = s->n; image->c = s->c; image->h = s->h; image->w = s->w;
    }
    for (i = 0; i < n_ops; i++) {
        const op_t *op = &ops[i];
        const tensor_t *x = &tensors[op->in];
        tensor_t *y = &tensors[op->out];
        int64_t n = x->n, c = x->c, h = x->h, w = x->w;
        if (op->kind == CONV) {
            if (c != op->cin)
                fail(op->line, "stimulus %s: conv '%s' has CIN %d but its input '%s' has %lld channels",
                     s->name, op->name, op->cin, x->name, (long long)c);
            c = op->cout;
        } else if (op->kind == ADD) {
            const tensor_t *z = &tensors[op->branch];
            if (z->n != n || z->c != c || z->h != h || z->w != w)
                fail(op->line, "stimulus %s: add '%s' adds '%s' (%lld x %lld x %lld x %lld) and '%s' "
                     "(%d x %d x %d x %d)", s->name, op->name, x->name, (long long)n, (long long)c,
                     (long long)h, (long long)w, z->name, z->n, z->c, z->h, z->w);
        } else if (op->kind == SHUFFLE) {
            int r = op->factor;
            if (c % (r * r) != 0)
                fail(op->line, "stimulus %s: shuffle '%s': factor %d^2 does not divide the %lld channels "
                     "of '%s'", s->name, op->name, r, (long long)c, x->name);
            c /= r * r;
            h *= r;
            w *= r;
        }
        if (c > MAX_DIM || h > MAX_DIM || w > MAX_DIM || n * c * h * w > MAX_ELEMS)
            fail(op->line, "stimulus %s: '%s' would be %lld x %lld x %lld x %lld, more than the limit "
                 "(%d a side, 2^28 elements)", s->name, y->name, (long long)n, (long long)c,
                 (long long)h, (long long)w, MAX_DIM);
        y->n = (int)n; y->c = (int)c; y->h = (int)h; y->w = (int)w;
    }
    for (i = 0; i < n_tensors; i++) tensors[i].n = 0;
}

/* the shapes it makes, and its input file: size and code range */
static void check_stimulus(const char *dir, const stimulus_t *s)
{
    const tensor_t *image = &tensors[find_tensor("image.in")];
    char path[PATH_LEN], file_name[NAME_LEN + 16], what[NAME_LEN + 32];
    check_shapes(s);
    snprintf(file_name, sizeof file_name, "%.63s/image.in.bin", s->name);
    snprintf(what, sizeof what, "stimulus '%.63s' input", s->name);
    join(path, dir, file_name, "");
    read_bin(s->line, what, path, image->dtype, (size_t)s->n * s->c * s->h * s->w, NULL,
             image->qmin, image->qmax);
}

/* one line of model.txt into line (newline kept): 0 at the end of the file. A NUL
 * byte or a line longer than the buffer is refused by line number; fgets would hide
 * the first behind the second. */
static int read_line(FILE *file, char *line, int size)
{
    int c, n = 0;
    while ((c = fgetc(file)) != EOF) {
        if (c == '\0') {
            fclose(file);
            fail(line_no + 1, "a NUL byte (model.txt is text)");
        }
        if (n == size - 2 && c != '\n') {
            fclose(file);
            fail(line_no + 1, "longer than %d characters", size - 2);
        }
        line[n++] = (char)c;
        if (c == '\n') break;
    }
    line[n] = '\0';
    return n > 0;
}

static void parse_model(const char *dir)
{
    char line[LINE_LEN], *f[MAX_FIELDS];
    int nf, section = 0, header = 0, ended = 0, i;  /* section: 0 header, 1 tensors, 2 stimuli, 3 ops */
    static const char *SECTIONS[] = {"the header", "tensor lines", "stimulus lines", "op lines"};
    FILE *file;
    join(model_path, dir, "model.txt", "");
    if (!(file = fopen(model_path, "r"))) fail(0, "cannot open %s", model_path);
    while (!ended && read_line(file, line, (int)sizeof line)) {
        int sect;
        line_no++;
        if (line[0] == '#') continue;
        if ((nf = split(line, f)) == 0) continue;
        if (strcmp(f[0], "fqsr_model") == 0) sect = 0;
        else if (strcmp(f[0], "tensor") == 0) sect = 1;
        else if (strcmp(f[0], "stimulus") == 0) sect = 2;
        else if (strcmp(f[0], "conv") == 0 || strcmp(f[0], "requant") == 0
                 || strcmp(f[0], "add") == 0 || strcmp(f[0], "shuffle") == 0) sect = 3;
        else if (strcmp(f[0], "end") == 0) sect = 4;
        else {
            fclose(file);
            fail(line_no, "unknown line kind '%.40s'", f[0]);
            return;
        }
        if (!header && sect != 0) {
            fclose(file);
            fail(line_no, "expected the header 'fqsr_model 1' before '%.40s'", f[0]);
        }
        if (sect == 0 && header) {
            fclose(file);
            fail(line_no, "a second 'fqsr_model' header");
        }
        if (sect < section) {
            fclose(file);
            fail(line_no, "a %s line after %s (the order is header, tensors, stimuli, ops, end)",
                 f[0], SECTIONS[section]);
        }
        if ((sect == 1 && n_tensors >= MAX_TENSORS) || (sect == 2 && n_stimuli >= MAX_STIMULI)
            || (sect == 3 && n_ops >= MAX_OPS)) {
            fclose(file);
            fail(line_no, "more %s than this port holds (%d tensors, %d stimuli, %d ops)",
                 SECTIONS[sect], MAX_TENSORS, MAX_STIMULI, MAX_OPS);
        }
        if (sect == 3 && section < 3) {           /* the first op: the input image exists */
            i = find_tensor("image.in");
            if (i < 0) {
                fclose(file);
                fail(line_no, "no tensor line declares the input 'image.in'");
            }
            produced[i] = 1;
        }
        section = sect;
        /* fail() exits with the file open: harmless, nothing was written */
        switch (sect) {
        case 0:
            expect_fields(nf, 2, 2, "header", "fqsr_model 1");
            model_version = (int)int_field(f[1], "model.txt version", 1, 2);
            header = 1;
            break;
        case 1: parse_tensor(f, nf); break;
        case 2: parse_stimulus(f, nf); break;
        case 3:
            if (strcmp(f[0], "conv") == 0) parse_conv(dir, f, nf);
            else if (strcmp(f[0], "requant") == 0) parse_requant(f, nf);
            else if (strcmp(f[0], "add") == 0) parse_add(f, nf);
            else parse_shuffle(f, nf);
            break;
        default:
            expect_fields(nf, 1, 1, "end", "end");
            ended = 1;
        }
    }
    fclose(file);
    if (!header) fail(line_no + 1, "no 'fqsr_model 1' header");
    if (!ended) fail(line_no + 1, "no 'end' line (the file is truncated?)");
    if (n_stimuli == 0) fail(line_no, "no stimulus lines: nothing to run");
    if (n_ops == 0) fail(line_no, "no op lines: nothing to compute");
    for (i = 0; i < n_stimuli; i++) check_stimulus(dir, &stimuli[i]);
}

/* ---- ops ------------------------------------------------------------------ */

static void alloc_tensor(tensor_t *t, int n, int c, int h, int w)
{
    t->n = n; t->c = c; t->h = h; t->w = w;
    t->data = checked_calloc((size_t)n * c * h * w, sizeof(long long));
}

static size_t numel(const tensor_t *t) { return (size_t)t->n * t->c * t->h * t->w; }

/* The accumulators of a conv whose taps outside the image read op->pad[c] instead of 0
 * (EDSR's head with head_pad "mean"), summed as written: every partial sum is bounded as
 * parse_conv proved, since a pad value is a code of the input tensor. */
static void conv_acc_padded(const op_t *op, const tensor_t *x, long long *acc)
{
    int i, o, c, oy, ox, ky, kx, half = op->k / 2;
    size_t out = 0;
    for (i = 0; i < x->n; i++)
        for (o = 0; o < op->cout; o++)
            for (oy = 0; oy < x->h; oy++)
                for (ox = 0; ox < x->w; ox++) {
                    long long a = op->b[o];
                    for (c = 0; c < op->cin; c++)
                        for (ky = 0; ky < op->k; ky++)
                            for (kx = 0; kx < op->k; kx++) {
                                int yy = oy + ky - half, xx = ox + kx - half;
                                long long v = (yy < 0 || yy >= x->h || xx < 0 || xx >= x->w) ? op->pad[c]
                                    : x->data[(((size_t)i * x->c + c) * x->h + yy) * x->w + xx];
                                a += op->w[(((size_t)o * op->cin + c) * op->k + ky) * op->k + kx] * v;
                            }
                    acc[out++] = a;
                }
}

/* "same" convolution, stride 1, zero padding k/2 (padding is the value 0, or op->pad),
 * then requantization: two multipliers, for acc >= 0 and acc < 0 (PReLU).
 * parse_conv proved every partial sum within int64. */
static void conv_op(const op_t *op, tensor_t *acc)
{
    const tensor_t *x = &tensors[op->in];
    tensor_t *y = &tensors[op->out];
    size_t i;
    if (x->c != op->cin) fail(op->line, "conv '%s': input channels do not match the weights", op->name);
    alloc_tensor(acc, x->n, op->cout, x->h, x->w);
    alloc_tensor(y, x->n, op->cout, x->h, x->w);
    if (op->pad) conv_acc_padded(op, x, acc->data);
    else fqsr_conv_acc(x->data, x->n, x->c, x->h, x->w, op->w, op->b, op->cout, op->k, acc->data);
    for (i = 0; i < numel(acc); i++) {
        long long a = acc->data[i];
        if (a < DTYPE_MIN[op->acc_dtype] || a > DTYPE_MAX[op->acc_dtype])
            fail(op->line, "conv '%s': stimulus %s: accumulator %lld does not fit ACC_DTYPE %s", op->name,
                 cur_stimulus->name, a, DTYPE_NAMES[op->acc_dtype]);
        if (a >= 0) check_requant(a, op->mult, op->shift);
        else check_requant(a, op->neg_mult, op->neg_shift);   /* |-a| = |a| */
        y->data[i] = fqsr_conv_output(a, (int)op->mult, op->shift, (int)op->neg_mult, op->neg_shift,
                                      op->neg_sign, y->qmin, y->qmax);
    }
}

static void requant_op(const op_t *op)
{
    const tensor_t *x = &tensors[op->in];
    tensor_t *y = &tensors[op->out];
    size_t i;
    alloc_tensor(y, x->n, x->c, x->h, x->w);
    for (i = 0; i < numel(x); i++) {
        check_requant(x->data[i], op->mult, op->shift);
        y->data[i] = fqsr_requant_clamp(x->data[i], (int)op->mult, op->shift, y->qmin, y->qmax);
    }
}

/* Eq. 7: y = clamp(rrs(x * Mx + relu?(z) * Mz, 31 - shift)); both products share the shift.
 * parse_add proved the sum within int64. */
static void add_op(const op_t *op)
{
    const tensor_t *x = &tensors[op->in], *z = &tensors[op->branch];
    tensor_t *y = &tensors[op->out];
    size_t i;
    if (numel(x) != numel(z)) fail(op->line, "add '%s': operands differ in size", op->name);
    alloc_tensor(y, x->n, x->c, x->h, x->w);
    for (i = 0; i < numel(x); i++)
        y->data[i] = fqsr_add(x->data[i], z->data[i], op->relu, (int)op->mult, (int)op->branch_mult,
                              op->shift, y->qmin, y->qmax);
}

/* (N, C r^2, H, W) -> (N, C, H r, W r): y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w] */
static void shuffle_op(const op_t *op)
{
    const tensor_t *x = &tensors[op->in];
    tensor_t *y = &tensors[op->out];
    int r = op->factor;
    if (r < 1 || x->c % (r * r) != 0)
        fail(op->line, "shuffle '%s': factor does not divide the channels", op->name);
    alloc_tensor(y, x->n, x->c / (r * r), x->h * r, x->w * r);
    fqsr_pixel_shuffle(x->data, x->n, x->c, x->h, x->w, r, y->data);
}

/* port == NULL: compute only (the dry run), write nothing */
static void run_stimulus(const char *golden, const char *port, const stimulus_t *s)
{
    char dir[PATH_LEN], path[PATH_LEN], file[NAME_LEN + 16], what[NAME_LEN + 32];
    tensor_t *image = &tensors[find_tensor("image.in")];
    int i;
    cur_stimulus = s;
    if (port) {
        join(dir, port, s->name, "");
        make_dir(dir);
    }
    alloc_tensor(image, s->n, s->c, s->h, s->w);
    snprintf(file, sizeof file, "%.63s/image.in.bin", s->name);
    snprintf(what, sizeof what, "stimulus '%.63s' input", s->name);
    join(path, golden, file, "");
    read_bin(s->line, what, path, image->dtype, numel(image), image->data, image->qmin, image->qmax);
    for (i = 0; i < n_ops; i++) {
        const op_t *op = &ops[i];
        tensor_t acc;
        tensor_t *y = &tensors[op->out];
        cur_op = op;
        memset(&acc, 0, sizeof acc);
        if (!tensors[op->in].data) fail(op->line, "'%s' reads a tensor that is not computed yet", op->name);
        switch (op->kind) {
        case CONV: conv_op(op, &acc); break;
        case REQUANT: requant_op(op); break;
        case ADD: add_op(op); break;
        default: shuffle_op(op); break;
        }
        if (port) {
            join(path, dir, y->name, ".bin");
            write_bin(path, y->dtype, numel(y), y->data);
            if (op->kind == CONV) {
                snprintf(file, sizeof file, "%.63s.acc.bin", op->name);
                join(path, dir, file, "");
                write_bin(path, op->acc_dtype, numel(&acc), acc.data);
            }
        }
        free(acc.data);
    }
    cur_op = NULL;
    for (i = 0; i < n_tensors; i++) {
        free(tensors[i].data);
        tensors[i].data = NULL;
    }
}

int main(int argc, char **argv)
{
    int i;
    if (argc != 3) {
        fprintf(stderr, "usage: fqsr_port GOLDEN_DIR PORT_DIR\n");
        return 2;
    }
    for (i = 1; i < 3; i++)
        if (strlen(argv[i]) > ARG_LEN) fail(0, "path longer than %d characters: %.60s...", ARG_LEN, argv[i]);
    parse_model(argv[1]);
    if (dry_run_needed)      /* a run-time overflow must fail before anything is written */
        for (i = 0; i < n_stimuli; i++) run_stimulus(argv[1], NULL, &stimuli[i]);
    make_dir(argv[2]);
    for (i = 0; i < n_stimuli; i++) {
        run_stimulus(argv[1], argv[2], &stimuli[i]);
        printf("fqsr_port: %s: %d ops -> %s/%s\n", stimuli[i].name, n_ops, argv[2], stimuli[i].name);
    }
    return 0;
}
