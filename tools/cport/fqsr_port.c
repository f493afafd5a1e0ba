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
 * libc only; mkdir() is the one POSIX call (C99 has no way to make a directory).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NAME_LEN 64
#define PATH_LEN 1024
#define MAX_TENSORS 256
#define MAX_OPS 256
#define MAX_STIMULI 32

enum dtype { U8, I8, I16, I32, I64 };
static const char *DTYPE_NAMES[] = {"uint8", "int8", "int16", "int32", "int64"};
static const int DTYPE_BYTES[] = {1, 1, 2, 4, 8};

typedef struct {
    char name[NAME_LEN];
    int dtype;
    int64_t qmin, qmax;
    int n, c, h, w;     /* NCHW shape, set when the tensor is computed */
    int64_t *data;      /* NULL until computed */
} tensor_t;

enum op_kind { CONV, REQUANT, ADD, SHUFFLE };

typedef struct {
    int kind;
    char name[NAME_LEN];
    int in, out, branch;                 /* tensor indices (branch: add only) */
    int cout, cin, k, acc_dtype;         /* conv */
    int64_t *w, *b;                      /* conv: OIHW weight codes, bias (cout) */
    int64_t mult, neg_mult;              /* int32 multipliers */
    int shift, neg_shift, neg_sign;      /* real = sign * mult * 2^(shift - 31) */
    int relu;                            /* add: ReLU on the branch (Eq. 7) */
    int64_t branch_mult;                 /* add */
    int factor;                          /* shuffle */
} op_t;

typedef struct { char name[NAME_LEN]; int n, c, h, w; } stimulus_t;

static tensor_t tensors[MAX_TENSORS];
static op_t ops[MAX_OPS];
static stimulus_t stimuli[MAX_STIMULI];
static int n_tensors, n_ops, n_stimuli;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fqsr_port: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static void *checked_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size);
    if (!p) die("out of memory", NULL);
    return p;
}

/* ---- arithmetic (docs/SPEC.md, integer section) -------------------------- */

/* floor(v / 2^n + 1/2): round half up. Written as a floor division because
 * >> on a negative value is implementation-defined in C99. */
static int64_t rounding_right_shift(int64_t v, int n)
{
    int64_t d, t, q;
    if (n == 0) return v;
    d = (int64_t)1 << n;
    t = v + (d >> 1);
    q = t / d;                        /* C99 division truncates toward zero */
    if (t % d != 0 && t < 0) q -= 1;  /* ... so step down to the floor */
    return q;
}

/* round_half_up(x * mult / 2^(31 - shift)), exact while |x| * mult + 2^(n-1)
 * fits int64 (SPEC 6.4); a value past that bound fails loudly. */
static int64_t requant(int64_t x, int64_t mult, int shift)
{
    int n = 31 - shift;
    int64_t room;
    if (n < 0 || n > 62) die("shift out of range", NULL);
    room = INT64_MAX - (n > 0 ? (int64_t)1 << (n - 1) : 0);
    if (mult > 0 && (x > room / mult || x < -(room / mult)))
        die("requantization would overflow int64", NULL);
    return rounding_right_shift(x * mult, n);
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* ---- files ---------------------------------------------------------------- */

static int dtype_of(const char *name)
{
    int i;
    for (i = 0; i <= I64; i++)
        if (strcmp(name, DTYPE_NAMES[i]) == 0) return i;
    die("unknown dtype in model.txt", name);
    return -1;
}

/* count elements of dtype, little-endian two's complement, into int64 */
static void read_bin(const char *path, int dtype, size_t count, int64_t *dst)
{
    size_t size = DTYPE_BYTES[dtype], i, j;
    unsigned char *buf = checked_calloc(count, size);
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open", path);
    if (fread(buf, size, count, f) != count || fgetc(f) != EOF) die("wrong size", path);
    fclose(f);
    for (i = 0; i < count; i++) {
        uint64_t u = 0;
        for (j = 0; j < size; j++) u |= (uint64_t)buf[i * size + j] << (8 * j);
        if (dtype != U8 && size < 8 && (u >> (8 * size - 1)))
            u |= ~(uint64_t)0 << (8 * size);          /* sign-extend */
        /* uint64 -> int64 without relying on implementation-defined conversion */
        dst[i] = (u >> 63) ? -(int64_t)(~u) - 1 : (int64_t)u;
    }
    free(buf);
}

static void write_bin(const char *path, int dtype, size_t count, const int64_t *src)
{
    size_t size = DTYPE_BYTES[dtype], i, j;
    unsigned char *buf = checked_calloc(count, size);
    FILE *f;
    for (i = 0; i < count; i++) {
        uint64_t u = (uint64_t)src[i];                  /* two's complement, mod 2^64 */
        for (j = 0; j < size; j++) buf[i * size + j] = (unsigned char)(u >> (8 * j));
    }
    f = fopen(path, "wb");
    if (!f || fwrite(buf, size, count, f) != count || fclose(f) != 0) die("cannot write", path);
    free(buf);
}

static void join(char *out, const char *a, const char *b, const char *c)
{
    if (snprintf(out, PATH_LEN, "%s/%s%s", a, b, c) >= PATH_LEN) die("path too long", b);
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0777) != 0 && errno != EEXIST) die("cannot create directory", path);
}

/* ---- model.txt ------------------------------------------------------------ */

static int tensor_index(const char *name)
{
    int i;
    for (i = 0; i < n_tensors; i++)
        if (strcmp(tensors[i].name, name) == 0) return i;
    die("model.txt names an unknown tensor", name);
    return -1;
}

static void parse_model(const char *dir)
{
    char path[PATH_LEN], line[1024], kind[16], a[NAME_LEN], b[NAME_LEN], c[NAME_LEN], d[NAME_LEN];
    char wdt[16], bdt[16], adt[16];
    int version = 0, ended = 0;
    FILE *f;
    join(path, dir, "model.txt", "");
    if (!(f = fopen(path, "r"))) die("cannot open", path);
    while (fgets(line, sizeof line, f)) {
        op_t *op = &ops[n_ops];
        long long m1, m2, q1, q2;
        int i1, i2, i3, i4, i5;
        if (line[0] == '#' || line[0] == '\n') continue;
        if (sscanf(line, "%15s", kind) != 1) continue;
        if (n_tensors >= MAX_TENSORS || n_ops >= MAX_OPS || n_stimuli >= MAX_STIMULI)
            die("model.txt: too many lines", line);
        memset(op, 0, sizeof *op);
        if (strcmp(kind, "fqsr_model") == 0 && sscanf(line, "%*s %d", &version) == 1) {
            if (version != 1) die("model.txt: unsupported version", line);
        } else if (strcmp(kind, "tensor") == 0 && sscanf(line, "%*s %63s %15s %lld %lld", a, wdt, &q1, &q2) == 4) {
            tensor_t *t = &tensors[n_tensors++];
            strcpy(t->name, a);
            t->dtype = dtype_of(wdt);
            t->qmin = q1;
            t->qmax = q2;
        } else if (strcmp(kind, "stimulus") == 0
                   && sscanf(line, "%*s %63s %d %d %d %d", a, &i1, &i2, &i3, &i4) == 5) {
            stimulus_t *s = &stimuli[n_stimuli++];
            strcpy(s->name, a);
            s->n = i1; s->c = i2; s->h = i3; s->w = i4;
        } else if (strcmp(kind, "conv") == 0
                   && sscanf(line, "%*s %63s %63s %63s %d %d %d %15s %15s %15s %lld %d %lld %d %d",
                             a, b, c, &i1, &i2, &i3, wdt, bdt, adt, &m1, &i4, &m2, &i5, &op->neg_sign) == 14) {
            char file[NAME_LEN + 16];
            op->kind = CONV;
            strcpy(op->name, a);
            op->in = tensor_index(b);
            op->out = tensor_index(c);
            op->cout = i1; op->cin = i2; op->k = i3;
            op->acc_dtype = dtype_of(adt);
            op->mult = m1; op->shift = i4; op->neg_mult = m2; op->neg_shift = i5;
            op->w = checked_calloc((size_t)i1 * i2 * i3 * i3, sizeof(int64_t));
            op->b = checked_calloc((size_t)i1, sizeof(int64_t));
            sprintf(file, "%s.w.bin", a);
            join(path, dir, "weights/", file);
            read_bin(path, dtype_of(wdt), (size_t)i1 * i2 * i3 * i3, op->w);
            sprintf(file, "%s.b.bin", a);
            join(path, dir, "weights/", file);
            read_bin(path, dtype_of(bdt), (size_t)i1, op->b);
            n_ops++;
        } else if (strcmp(kind, "requant") == 0
                   && sscanf(line, "%*s %63s %63s %63s %lld %d", a, b, c, &m1, &op->shift) == 5) {
            op->kind = REQUANT;
            strcpy(op->name, a);
            op->in = tensor_index(b);
            op->out = tensor_index(c);
            op->mult = m1;
            n_ops++;
        } else if (strcmp(kind, "add") == 0
                   && sscanf(line, "%*s %63s %63s %63s %63s %d %lld %lld %d",
                             a, b, c, d, &op->relu, &m1, &m2, &op->shift) == 8) {
            op->kind = ADD;
            strcpy(op->name, a);
            op->in = tensor_index(b);
            op->branch = tensor_index(c);
            op->out = tensor_index(d);
            op->mult = m1;
            op->branch_mult = m2;
            n_ops++;
        } else if (strcmp(kind, "shuffle") == 0
                   && sscanf(line, "%*s %63s %63s %63s %d", a, b, c, &op->factor) == 4) {
            op->kind = SHUFFLE;
            strcpy(op->name, a);
            op->in = tensor_index(b);
            op->out = tensor_index(c);
            n_ops++;
        } else if (strcmp(kind, "end") == 0) {
            ended = 1;
            break;
        } else {
            die("model.txt: cannot parse line", line);
        }
    }
    fclose(f);
    if (version != 1 || !ended) die("model.txt: no 'fqsr_model 1' header or no 'end' line", path);
}

/* ---- ops ------------------------------------------------------------------ */

#define AT(t, n_, c_, y_, x_) ((t)->data[(((size_t)(n_) * (t)->c + (c_)) * (t)->h + (y_)) * (t)->w + (x_)])

static void alloc_tensor(tensor_t *t, int n, int c, int h, int w)
{
    t->n = n; t->c = c; t->h = h; t->w = w;
    t->data = checked_calloc((size_t)n * c * h * w, sizeof(int64_t));
}

static size_t numel(const tensor_t *t) { return (size_t)t->n * t->c * t->h * t->w; }

/* "same" convolution, stride 1, zero padding k/2 (padding is the value 0),
 * then requantization: two multipliers, for acc >= 0 and acc < 0 (PReLU). */
static void conv_op(const op_t *op, tensor_t *acc)
{
    const tensor_t *x = &tensors[op->in];
    tensor_t *y = &tensors[op->out];
    int n, o, oy, ox, c, ky, kx, pad = op->k / 2;
    size_t i;
    if (x->c != op->cin) die("conv input channels do not match the weights", op->name);
    alloc_tensor(acc, x->n, op->cout, x->h, x->w);
    alloc_tensor(y, x->n, op->cout, x->h, x->w);
    for (n = 0; n < x->n; n++)
        for (o = 0; o < op->cout; o++)
            for (oy = 0; oy < x->h; oy++)
                for (ox = 0; ox < x->w; ox++) {
                    int64_t sum = op->b[o];
                    for (c = 0; c < op->cin; c++)
                        for (ky = 0; ky < op->k; ky++) {
                            int in_y = oy + ky - pad;
                            if (in_y < 0 || in_y >= x->h) continue;
                            for (kx = 0; kx < op->k; kx++) {
                                int in_x = ox + kx - pad;
                                if (in_x < 0 || in_x >= x->w) continue;
                                sum += op->w[(((size_t)o * op->cin + c) * op->k + ky) * op->k + kx]
                                       * AT(x, n, c, in_y, in_x);
                            }
                        }
                    AT(acc, n, o, oy, ox) = sum;
                }
    for (i = 0; i < numel(acc); i++) {
        int64_t a = acc->data[i];
        int64_t v = a >= 0 ? requant(a, op->mult, op->shift)
                           : requant(op->neg_sign * a, op->neg_mult, op->neg_shift);
        y->data[i] = clamp(v, y->qmin, y->qmax);
    }
}

static void requant_op(const op_t *op)
{
    const tensor_t *x = &tensors[op->in];
    tensor_t *y = &tensors[op->out];
    size_t i;
    alloc_tensor(y, x->n, x->c, x->h, x->w);
    for (i = 0; i < numel(x); i++)
        y->data[i] = clamp(requant(x->data[i], op->mult, op->shift), y->qmin, y->qmax);
}

/* Eq. 7: y = clamp(rrs(x * Mx + relu?(z) * Mz, 31 - shift)); both products share the shift. */
static void add_op(const op_t *op)
{
    const tensor_t *x = &tensors[op->in], *z = &tensors[op->branch];
    tensor_t *y = &tensors[op->out];
    size_t i;
    if (numel(x) != numel(z)) die("add operands differ in size", op->name);
    alloc_tensor(y, x->n, x->c, x->h, x->w);
    for (i = 0; i < numel(x); i++) {
        int64_t b = z->data[i];
        if (op->relu && b < 0) b = 0;
        y->data[i] = clamp(rounding_right_shift(x->data[i] * op->mult + b * op->branch_mult, 31 - op->shift),
                           y->qmin, y->qmax);
    }
}

/* (N, C r^2, H, W) -> (N, C, H r, W r): y[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w] */
static void shuffle_op(const op_t *op)
{
    const tensor_t *x = &tensors[op->in];
    tensor_t *y = &tensors[op->out];
    int r = op->factor, n, c, h, w, i, j;
    if (r < 1 || x->c % (r * r) != 0) die("shuffle factor does not divide the channels", op->name);
    alloc_tensor(y, x->n, x->c / (r * r), x->h * r, x->w * r);
    for (n = 0; n < x->n; n++)
        for (c = 0; c < y->c; c++)
            for (h = 0; h < x->h; h++)
                for (w = 0; w < x->w; w++)
                    for (i = 0; i < r; i++)
                        for (j = 0; j < r; j++)
                            AT(y, n, c, h * r + i, w * r + j) = AT(x, n, c * r * r + i * r + j, h, w);
}

static void run_stimulus(const char *golden, const char *port, const stimulus_t *s)
{
    char dir[PATH_LEN], path[PATH_LEN], file[NAME_LEN + 16];
    tensor_t *image = &tensors[tensor_index("image.in")];
    int i;
    join(dir, port, s->name, "");
    make_dir(dir);
    alloc_tensor(image, s->n, s->c, s->h, s->w);
    sprintf(file, "%s/image.in.bin", s->name);
    join(path, golden, file, "");
    read_bin(path, image->dtype, numel(image), image->data);
    for (i = 0; i < n_ops; i++) {
        const op_t *op = &ops[i];
        tensor_t acc;
        tensor_t *y = &tensors[op->out];
        memset(&acc, 0, sizeof acc);
        if (!tensors[op->in].data) die("op reads a tensor that is not computed yet", op->name);
        switch (op->kind) {
        case CONV: conv_op(op, &acc); break;
        case REQUANT: requant_op(op); break;
        case ADD: add_op(op); break;
        default: shuffle_op(op); break;
        }
        join(path, dir, y->name, ".bin");
        write_bin(path, y->dtype, numel(y), y->data);
        if (op->kind == CONV) {
            sprintf(file, "%s.acc.bin", op->name);
            join(path, dir, file, "");
            write_bin(path, op->acc_dtype, numel(&acc), acc.data);
            free(acc.data);
        }
    }
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
    parse_model(argv[1]);
    make_dir(argv[2]);
    for (i = 0; i < n_stimuli; i++) {
        run_stimulus(argv[1], argv[2], &stimuli[i]);
        printf("fqsr_port: %s: %d ops -> %s/%s\n", stimuli[i].name, n_ops, argv[2], stimuli[i].name);
    }
    return 0;
}
