/* Op-level parity of the CUDA backend with the CPU backend: every op of
 * lib/backend.h on fresh random inputs (a new seed each run, printed so a
 * failure can be replayed with RL_TEST_SEED), CUDA against CPU, as a
 * normalized error max|gpu - cpu| / max(1, max|cpu|) within a per-op bound.
 * Outputs that an op overwrites are poisoned with NaN on the GPU first, so an
 * element it fails to write fails the check; outputs it accumulates into
 * start from the same random values on both sides.
 * The GEMM bound follows the mode of $RL_CUDA_MATH (bf16 1e-2, tf32 2e-3,
 * fp32 1e-5: an estimate of the rounding of k = 300 random products puts
 * bf16 near 3e-3); everything else is fp32 work and gets 1e-5 or tighter.
 * Skips, and says so, where the CUDA backend is not built or no GPU answers.
 * RL_TEST_GPU=devsim puts the CPU backend behind device pointers in the
 * GPU's place: tests/run does so to check this test's own logic everywhere. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../harness.h"
#include "backend.h"
#include "err.h"
#include "rng.h"
#include "safetensors.h"
#include "sample.h"

static const struct backend *gpu, *cpu = &backend_cpu;
static struct rng R;
static double gemm_tol, attn_tol;
static bool bf16_mode;                 /* the backend's products take bf16 operands */

/* The emulation's trace of launches (RL_EMU_TRACE, which main points at a
 * file of its own): hits[i], the launches since the last call whose names
 * start with names[i]; false where nothing is traced (a GPU or devsim,
 * where the file stays empty). */
static const char *trace_path;
static long trace_seen;
static bool trace_count(int n, const char *const names[], long hits[])
{
    FILE *f = trace_path ? fopen(trace_path, "r") : NULL;
    if (!f)
        return false;
    char line[128];
    long lines = 0;
    for (int i = 0; i < n; i++)
        hits[i] = 0;
    while (fgets(line, sizeof line, f))
        if (++lines > trace_seen)
            for (int i = 0; i < n; i++)
                hits[i] += !strncmp(line, names[i], strlen(names[i]));
    fclose(f);
    trace_seen = lines;
    return lines > 0;
}
/* the launches since the last call whose names start with `name`, or -1 */
static long traced(const char *name)
{
    long hits;
    return trace_count(1, &name, &hits) ? hits : -1;
}
/* the bf16 copies the products made of their operands */
static long operand_copies(void) { return traced("bf16 copy of a GEMM operand\n"); }

/* Where the emulation traces launches and the device line says decode
 * products stream (RL_CUDA_ROWS=stream), the last call must have run the
 * streamed kernel (or the one named). */
static void check_streamed_kernel(const char *what, const char *kernel)
{
    long n = traced(kernel);
    if (n < 0 || !gpu->detail || !strstr(gpu->detail, "(streamed)"))
        return;
    CHECKF(what, n > 0, "%ld launches", n);
}
static void check_streamed(const char *what) { check_streamed_kernel(what, "matmul_rows (tensor cores, streamed)"); }

static float *rand_host(size_t n, float scale)
{
    float *h = rl_malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = scale * (2 * rng_uniform(&R) - 1);
    return h;
}

/* A tensor on both sides: cpu (host memory) and gpu, same values. */
struct two {
    float *c, *g;
    size_t n;
};
static struct two both(const float *h, size_t n)
{
    struct two t = {cpu->alloc(n * sizeof(float)), gpu->alloc(n * sizeof(float)), n};
    memcpy(t.c, h, n * sizeof(float));
    gpu->upload(t.g, h, n * sizeof(float));
    return t;
}
static struct two rand_both(size_t n, float scale)
{
    float *h = rand_host(n, scale);
    struct two t = both(h, n);
    free(h);
    return t;
}
/* x rounded to bf16 values (to nearest, ties to even), still as floats */
static void bf16_values(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = st_bf16_to_f32(st_f32_to_bf16(x[i]));
}
static struct two rand_bf16_both(size_t n)
{
    float *h = rand_host(n, 1);
    bf16_values(h, n);
    struct two t = both(h, n);
    free(h);
    return t;
}
/* An output the op overwrites: zeros on the CPU, NaN on the GPU. */
static struct two poisoned(size_t n)
{
    float *h = rl_malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    struct two t = {cpu->alloc(n * sizeof(float)), gpu->alloc(n * sizeof(float)), n};
    gpu->upload(t.g, h, n * sizeof(float));
    free(h);
    return t;
}
static void drop(struct two *t)
{
    cpu->free(t->c);
    gpu->free(t->g);
}
/* Element i of a GPU buffer of fp32, or of bf16 activations (act) */
static const float *act_at_g(const float *p, size_t i, bool act)
{
    return (const float *)((const char *)p + i * (act ? 2 : sizeof(float)));
}
static int *ints_gpu(const int *h, size_t n)
{
    int *g = gpu->alloc((n ? n : 1) * sizeof *g);
    gpu->upload(g, h, n * sizeof *g);
    return g;
}

/* Compare; report under NAME with the bound. */
static double err_of(const struct two *t)
{
    float *h = rl_malloc((t->n ? t->n : 1) * sizeof *h);
    gpu->download(h, t->g, t->n * sizeof *h);
    double e = harness_max_rel_err(h, t->c, t->n);
    free(h);
    return e;
}
/* Whether two GPU buffers hold the same bytes (an op against its twin) */
static bool same_bytes(const void *g1, const void *g2, size_t bytes)
{
    char *h1 = rl_malloc(bytes ? bytes : 1), *h2 = rl_malloc(bytes ? bytes : 1);
    gpu->download(h1, g1, bytes);
    gpu->download(h2, g2, bytes);
    bool same = !memcmp(h1, h2, bytes);
    free(h1), free(h2);
    return same;
}
static void expect(const char *name, const struct two *t, double tol)
{
    double e = err_of(t);
    CHECKF(name, e <= tol, "normalized error %.3g > %.1g", e, tol);
}

static void test_matmul(void)
{
    char name[128];
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int m = 37, n = 129, k = 300, lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
            struct two a = rand_both((size_t)(ta ? k : m) * lda, 1), b = rand_both((size_t)(tb ? n : k) * ldb, 1);
            struct two c = rand_both((size_t)m * ldc, 1);
            cpu->matmul(ta, tb, m, n, k, 0.7f, a.c, lda, b.c, ldb, 0.5f, c.c, ldc);
            gpu->matmul(ta, tb, m, n, k, 0.7f, a.g, lda, b.g, ldb, 0.5f, c.g, ldc);
            snprintf(name, sizeof name, "matmul ta=%d tb=%d (alpha, beta, padded leading dims)", ta, tb);
            expect(name, &c, gemm_tol);
            drop(&a), drop(&b), drop(&c);
        }
    /* products wide enough for the GPU to copy the operands to bf16 first
     * (bf16 mode), contiguous and padded */
    for (int pad = 0; pad < 2; pad++)
        for (int ta = 0; ta < 2; ta++) {
            int m = 1100, n = 1030, k = 48, lda = (ta ? m : k) + 3 * pad, ldb = k + 5 * pad;
            struct two a = rand_both((size_t)(ta ? k : m) * lda, 1), b = rand_both((size_t)n * ldb, 1);
            struct two c = rand_both((size_t)m * n, 1);
            cpu->matmul(ta, true, m, n, k, 1.0f, a.c, lda, b.c, ldb, 1.0f, c.c, n);
            gpu->matmul(ta, true, m, n, k, 1.0f, a.g, lda, b.g, ldb, 1.0f, c.g, n);
            snprintf(name, sizeof name, "matmul %dx%dx%d ta=%d%s (bf16 copies in bf16 mode)", m, n, k, ta,
                     pad ? ", padded" : "");
            expect(name, &c, gemm_tol);
            drop(&a), drop(&b), drop(&c);
        }
    /* beta = 0 must overwrite (NaN in c must not survive); a contiguous a
     * with a padded b (operands the GPU copies by different routes) */
    struct two a = rand_both(64 * 96, 1), b = rand_both(80 * 101, 1), c = poisoned(64 * 80);
    cpu->matmul(false, true, 64, 80, 96, 1, a.c, 96, b.c, 101, 0, c.c, 80);
    gpu->matmul(false, true, 64, 80, 96, 1, a.g, 96, b.g, 101, 0, c.g, 80);
    expect("matmul beta=0 overwrites every element", &c, gemm_tol);
    drop(&a), drop(&b), drop(&c);
}

/* With matmul_invariant (RL_CUDA_GEMM=pinned) a row of a product must be
 * the bits of that row in a product of other rows: blocks of one product's
 * rows, each a product of its own, against the whole, in a linear layer's
 * a b^T and in a b. On a GPU the shapes are a model's (k 2048, 4097 rows:
 * past the pinned algorithm's 4096, and blocks on each side of the tile
 * sizes); the emulation's are small, with k past its split-k offers (which
 * a pinned route must pass over). In the emulation, whose heuristic picks
 * by the row count as a GPU's does, cuBLASLt unpinned must differ
 * somewhere, so that this check can fail; on a GPU the unpinned route's
 * count is printed ("invariance:", tests/gpu/run's report), which says
 * whether the card's pinned pass means anything. */
static void test_matmul_invariant(void)
{
    const char *d = gpu->detail ? gpu->detail : "";
    bool pinned = gpu->matmul_invariant, emu = strstr(d, "CPU emulation") != NULL;
    if (!pinned && !strstr(d, "cuBLASLt"))
        return;
    static const int small[][2] = {{0, 1}, {5, 17}, {100, 64}, {37, 63}, {299, 1}};
    static const int big[][2] = {{0, 1}, {1, 7}, {7, 63}, {64, 64}, {128, 65}, {300, 129},
                                 {1000, 1000}, {0, 4095}, {0, 4096}, {4096, 1}};
    const int (*block)[2] = emu ? small : big;
    int blocks = emu ? 5 : 10, M = emu ? 300 : 4097, N = emu ? 96 : 2048, K = emu ? 320 : 2048;
    for (int tb = 1; tb >= 0; tb--) {
        int ldb = tb ? K : N;
        struct two a = rand_both((size_t)M * K, 1), b = rand_both((size_t)N * K, 1);
        struct two whole = poisoned((size_t)M * N), part = poisoned((size_t)M * N);
        cpu->matmul(false, tb, M, N, K, 1, a.c, K, b.c, ldb, 0, whole.c, N);
        gpu->matmul(false, tb, M, N, K, 1, a.g, K, b.g, ldb, 0, whole.g, N);
        char name[128];
        snprintf(name, sizeof name, "matmul %dx%dx%d tb=%d, %s", M, N, K, tb, pinned ? "pinned" : "cuBLASLt");
        expect(name, &whole, gemm_tol);
        int same = 0;
        for (int i = 0; i < blocks; i++) {
            size_t r0 = (size_t)block[i][0];
            gpu->matmul(false, tb, block[i][1], N, K, 1, a.g + r0 * K, K, b.g, ldb, 0, part.g + r0 * N, N);
            same += same_bytes(whole.g + r0 * N, part.g + r0 * N, (size_t)block[i][1] * N * sizeof(float));
        }
        if (!pinned && !emu) {
            fprintf(stderr, "invariance: unpinned cuBLASLt, %dx%dx%d tb=%d: %d of %d blocks of rows alone kept "
                    "their bits\n", M, N, K, tb, same, blocks);
        } else {
            snprintf(name, sizeof name, "matmul tb=%d: rows alone %s their bits in the whole product", tb,
                     pinned ? "keep" : "(the emulation, unpinned) change");
            CHECKF(name, pinned ? same == blocks : same < blocks, "%d of %d blocks of rows the same", same, blocks);
        }
        drop(&a), drop(&b), drop(&whole), drop(&part);
    }
}

/* k = 577 reads b by scalars, k = 576 by float4; each row of every call
 * must be the bits of that row computed alone (batch invariance) */
/* matmul_rows, whose every row must be the bits of that row computed
 * alone; marked: b marked as parameters (on the GPU in bf16 mode, where k is
 * a multiple of 16 and n of 8, the tensor-core kernel: bf16 operands; 80
 * rows take two row blocks there, and n = 296 ends in a half block). With
 * RL_CUDA_ROWS=stream and k a multiple of 32, the streamed kernel must be
 * the one that ran (in the emulation, k = 576 is 3 segments of 6 parts of
 * 32, k = 2048 3 of 22, warps of 5 and 6 parts: a partial unroll). */
static void test_matmul_rows(int k, bool marked)
{
    enum { MAXR = 80 };
    int n = marked ? 296 : 300, rows[] = {1, 3, 16, 17, 64, 80};
    if (marked && !gpu->mark_params) {
        harness_skip("matmul_rows with marked b", "mark_params not used by this backend");
        return;
    }
    struct two b = rand_both((size_t)n * k, 1), a = rand_both((size_t)MAXR * k, 1);
    if (marked)
        gpu->mark_params(b.g, (size_t)n * k);
    float *alone = rl_malloc((size_t)MAXR * n * sizeof *alone), *one = gpu->alloc(n * sizeof *one);
    for (int r = 0; r < MAXR; r++) {
        gpu->matmul_rows(one, a.g + (size_t)r * k, b.g, 1, n, k);
        gpu->download(alone + (size_t)r * n, one, n * sizeof *one);
    }
    gpu->free(one);
    for (int i = 0; i < (int)(sizeof rows / sizeof *rows); i++) {
        int m = rows[i];
        struct two c = poisoned((size_t)m * n);
        cpu->matmul_rows(c.c, a.c, b.c, m, n, k);
        traced("");
        gpu->matmul_rows(c.g, a.g, b.g, m, n, k);
        if (marked && k % 32 == 0)
            check_streamed(harness_name("matmul_rows m=%d k=%d: the streamed kernel ran", m, k));
        const char *how = marked ? ", b marked (the GEMM mode)" : " (fp32, fixed order)";
        expect(harness_name("matmul_rows m=%d k=%d%s", m, k, how), &c, marked ? gemm_tol : 1e-5);
        float *h = rl_malloc((size_t)m * n * sizeof *h);
        gpu->download(h, c.g, (size_t)m * n * sizeof *h);
        CHECK(harness_name("matmul_rows m=%d k=%d%s: every row the bits of that row alone", m, k, marked ? ", b marked" : ""),
              !memcmp(alone, h, (size_t)m * n * sizeof *h));
        free(h);
        drop(&c);
    }
    free(alone);
    if (marked) {                        /* rows at an address 4 bytes off 16: the bits of the same rows aligned */
        int m = 3;
        float *shifted = a.g + 1, *aligned = gpu->alloc((size_t)m * k * sizeof(float));
        gpu->copy(aligned, shifted, (size_t)m * k);
        struct two c = poisoned((size_t)m * n), c2 = poisoned((size_t)m * n);
        cpu->matmul_rows(c.c, a.c + 1, b.c, m, n, k);
        gpu->matmul_rows(c.g, shifted, b.g, m, n, k);
        gpu->matmul_rows(c2.g, aligned, b.g, m, n, k);
        expect(harness_name("matmul_rows m=%d k=%d, b marked, a unaligned", m, k), &c, gemm_tol);
        CHECK(harness_name("matmul_rows m=%d k=%d, b marked: a unaligned gives the bits of a aligned", m, k),
              same_bytes(c.g, c2.g, (size_t)m * n * sizeof(float)));
        drop(&c), drop(&c2);
        gpu->free(aligned);
    }
    drop(&a), drop(&b);
}

/* matmul_rows_swiglu on m rows (b marked where the backend marks
 * parameters): h against the CPU's, and bit for bit against the backend's
 * own matmul_rows then swiglu (gu, its scratch, may stay unwritten). With
 * streamed rows the one kernel must run where f % 16 == 0: in the
 * emulation f = 320, k = 64 is one segment (the block pairs the gate and
 * up columns in shared memory) and f = 48, k = 576 four (the tile's last
 * block pairs them); f = 40 takes the two ops. a, gu and h are bf16
 * activations where the caller says (act_*), else fp32. */
static void expect_act(const char *name, const struct two *t, double tol);
struct rows_swiglu_bufs {
    struct two (*take)(size_t n, float scale), (*poison)(size_t n);
    float *(*scratch)(size_t n);
    void (*release)(struct two *t);
    bool act;
};
static void check_rows_swiglu(const struct rows_swiglu_bufs *bf, int m, int f, int k, const struct two *b)
{
    size_t mf = (size_t)m * f, esz = bf->act ? 2 : sizeof(float);
    struct two a = bf->take((size_t)m * k, 1), h = bf->poison(mf), gu = bf->poison(2 * mf);
    float *h2 = bf->scratch(mf), *gu2 = bf->scratch(2 * mf);
    cpu->matmul_rows_swiglu(h.c, gu.c, a.c, b->c, m, f, k);
    traced("");
    gpu->matmul_rows_swiglu(h.g, gu.g, a.g, b->g, m, f, k);
    const char *how = bf->act ? ", bf16 activations" : "";
    if (f % 16 == 0 && k % 32 == 0)
        check_streamed_kernel(harness_name("matmul_rows_swiglu m=%d f=%d k=%d%s: one streamed kernel", m, f, k, how),
                              "matmul_rows + swiglu (tensor cores, streamed)");
    double tol = 2 * gemm_tol + (bf->act ? 1e-2 : 1e-5);
    if (bf->act)
        expect_act(harness_name("matmul_rows_swiglu m=%d f=%d k=%d%s", m, f, k, how), &h, tol);
    else
        expect(harness_name("matmul_rows_swiglu m=%d f=%d k=%d%s", m, f, k, how), &h, tol);
    gpu->matmul_rows(gu2, a.g, b->g, m, 2 * f, k);
    gpu->swiglu(h2, gu2, m, f);
    CHECK(harness_name("matmul_rows_swiglu m=%d f=%d k=%d%s: the bits of matmul_rows then swiglu", m, f, k, how),
          same_bytes(h.g, h2, mf * esz));
    bf->release(&a), bf->release(&h), bf->release(&gu);
    if (!bf->act)
        gpu->free(h2), gpu->free(gu2);
}
static void test_rows_swiglu(const struct rows_swiglu_bufs *bf)
{
    static const int shapes[][2] = {{320, 64}, {48, 576}, {40, 64}}, rows[] = {1, 3, 17, 40};
    for (int i = 0; i < 3; i++) {
        int f = shapes[i][0], k = shapes[i][1];
        struct two b = rand_both((size_t)2 * f * k, 1);
        if (gpu->mark_params)
            gpu->mark_params(b.g, (size_t)2 * f * k);
        for (int r = 0; r < 4; r++)
            check_rows_swiglu(bf, rows[r], f, k, &b);
        drop(&b);
    }
}
static float *gpu_floats(size_t n) { return gpu->alloc(n * sizeof(float)); }

/* n = 300 rows: the weight gradient's column sums span three row chunks;
 * d = 1000 takes the rows four elements at a time, 1001 one at a time */
static void test_norms(int n, int d)
{
    struct two x = rand_both((size_t)n * d, 3), w = rand_both(d, 1);
    struct two y = poisoned((size_t)n * d), r = poisoned(n);
    cpu->rmsnorm(y.c, r.c, x.c, w.c, n, d, 1e-5f);
    gpu->rmsnorm(y.g, r.g, x.g, w.g, n, d, 1e-5f);
    expect(harness_name("rmsnorm: output, n=%d, d=%d", n, d), &y, 1e-5);
    expect(harness_name("rmsnorm: saved 1/rms, n=%d, d=%d", n, d), &r, 1e-5);
    struct two dy = rand_both((size_t)n * d, 1), dx = rand_both((size_t)n * d, 1), dw = rand_both(d, 1);
    cpu->rmsnorm_bwd(dx.c, dw.c, dy.c, x.c, w.c, r.c, n, d);
    gpu->rmsnorm_bwd(dx.g, dw.g, dy.g, x.g, w.g, r.g, n, d);
    expect(harness_name("rmsnorm_bwd: dx +=, n=%d, d=%d", n, d), &dx, 1e-5);
    expect(harness_name("rmsnorm_bwd: dw += (column sums), n=%d, d=%d", n, d), &dw, 1e-5);
    drop(&x), drop(&w), drop(&y), drop(&r), drop(&dy), drop(&dx), drop(&dw);
}

/* add_rmsnorm against the CPU's, and against the backend's own add then
 * rmsnorm: the same bits (x, y and 1/rms), since a decode step takes the
 * fused op where a caller of the two would get the other. act: x, r and y
 * are bf16 activations (the sum is rounded before the norm reads it). */
static void check_add_norm(const char *what, struct two *x, const struct two *r, const struct two *w,
                           struct two *y, struct two *rs, float *x2, float *y2, float *rs2, int n, int d, bool act)
{
    size_t nd = (size_t)n * d, esz = act ? 2 : sizeof(float);
    gpu->copy(x2, x->g, nd);
    cpu->add_rmsnorm(y->c, rs->c, x->c, r->c, w->c, n, d, 1e-5f);
    gpu->add_rmsnorm(y->g, rs->g, x->g, r->g, w->g, n, d, 1e-5f);
    double tol = act ? 1e-2 : 1e-5;
    if (act) {
        expect_act(harness_name("%s: x += r", what), x, tol);
        expect_act(harness_name("%s: output", what), y, tol);
    } else {
        expect(harness_name("%s: x += r", what), x, tol);
        expect(harness_name("%s: output", what), y, tol);
    }
    expect(harness_name("%s: saved 1/rms", what), rs, tol);
    gpu->add(x2, r->g, nd);
    gpu->rmsnorm(y2, rs2, x2, w->g, n, d, 1e-5f);
    const float *fused[3] = {x->g, y->g, rs->g}, *apart[3] = {x2, y2, rs2};
    size_t bytes[3] = {nd * esz, nd * esz, (size_t)n * sizeof(float)};
    bool same = true;
    for (int i = 0; i < 3; i++)
        same = same && same_bytes(fused[i], apart[i], bytes[i]);
    CHECK(harness_name("%s: the bits of add then rmsnorm", what), same);
}

/* r_off: the residual starts that many floats into its buffer (1: its rows
 * are not 16-byte aligned where x's are: the same bits still) */
static void test_add_norm(int n, int d, int r_off)
{
    size_t nd = (size_t)n * d;
    struct two x = rand_both(nd, 3), r = rand_both(nd, 3), w = rand_both(d, 1);
    struct two y = poisoned(nd), rs = poisoned(n), two2 = poisoned(nd);
    float *y2 = gpu->alloc(nd * sizeof(float)), *rs2 = gpu->alloc((size_t)n * sizeof(float));
    float *rbuf = gpu->alloc((nd + r_off) * sizeof(float)), *r_dev = r.g;
    gpu->copy(rbuf + r_off, r.g, nd);
    r.g = rbuf + r_off;
    char what[64];
    snprintf(what, sizeof what, "add_rmsnorm, n=%d, d=%d%s", n, d, r_off ? ", residual unaligned" : "");
    check_add_norm(what, &x, &r, &w, &y, &rs, two2.g, y2, rs2, n, d, false);
    r.g = r_dev;
    gpu->free(y2), gpu->free(rs2), gpu->free(rbuf);
    drop(&x), drop(&r), drop(&w), drop(&y), drop(&rs), drop(&two2);
}

/* RoPE's cos and sin tables [len][hd/2] on both sides (theta 10000) */
static void rope_tables(int len, int hd, struct two *c, struct two *s)
{
    int half = hd / 2;
    float *cs = rl_malloc((size_t)len * half * sizeof *cs), *sn = rl_malloc((size_t)len * half * sizeof *sn);
    for (int p = 0; p < len; p++)
        for (int j = 0; j < half; j++) {
            double a = p * pow(10000.0, -2.0 * j / hd);
            cs[p * half + j] = (float)cos(a);
            sn[p * half + j] = (float)sin(a);
        }
    *c = both(cs, (size_t)len * half), *s = both(sn, (size_t)len * half);
    free(cs), free(sn);
}

static void test_rope(void)
{
    int n = 20, nh = 5, hd = 64, stride = nh * hd + 7, len = 64;
    int pos[20];
    for (int i = 0; i < n; i++)
        pos[i] = (i * 7 + 3) % len;
    int *gpos = ints_gpu(pos, n);
    struct two c, s;
    rope_tables(len, hd, &c, &s);
    for (int inv = 0; inv < 2; inv++) {
        struct two x = rand_both((size_t)n * stride, 1);
        cpu->rope(x.c, stride, pos, n, nh, hd, c.c, s.c, inv);
        gpu->rope(x.g, stride, gpos, n, nh, hd, c.g, s.g, inv);
        expect(inv ? "rope inverse (the backward)" : "rope (rotate-half, positions per row)", &x, 1e-5);
        drop(&x);
    }
    drop(&c), drop(&s);
    gpu->free(gpos);
}

/* Attention over sequences of several shapes: fresh prompts (pos 0), a
 * continuation after cached tokens (pos > 0), single-token decode steps;
 * grouped-query heads (head_dim 64: 6 heads, 2 kv heads; 128: 4 and 2);
 * then the backward. The prompts take the route $RL_CUDA_ATTN picks (by
 * default cuBLAS; tc, cublas, tiled, simple: tests/gpu/run and the
 * emulation run each; the tensor-core kernels take both head_dims). */
/* The GPU's copy of t as bf16 bits (t's values are bf16 values, so exact). */
static uint16_t *bf16_gpu(const struct two *t)
{
    uint16_t *h = rl_malloc((t->n ? t->n : 1) * sizeof *h), *g = gpu->alloc((t->n ? t->n : 1) * sizeof *g);
    for (size_t i = 0; i < t->n; i++)
        h[i] = st_f32_to_bf16(t->c[i]);
    gpu->upload(g, h, t->n * sizeof *h);
    free(h);
    return g;
}
/* Normalized error of a bf16 GPU buffer of n values against cpu's fp32. */
static double bf16_err(const uint16_t *g, const float *cpu_vals, size_t n)
{
    uint16_t *h = rl_malloc((n ? n : 1) * sizeof *h);
    float *f = rl_malloc((n ? n : 1) * sizeof *f);
    gpu->download(h, g, n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        f[i] = st_bf16_to_f32(h[i]);
    double e = harness_max_rel_err(f, cpu_vals, n);
    free(h), free(f);
    return e;
}

/* kv16: the GPU's keys and values sit in a bf16 KV cache (bk_attn_seq.kv_bf16;
 * the CPU's in fp32, holding the same values): kv_append and the forward
 * read and write it as bf16, the prefill routes through their fp32 copy,
 * decode's per-query kernel directly. No backward. */
/* Where the emulation traces launches and the device line names the
 * tensor-core kernels (bf16 mode), the last call must have run `kernel`, the
 * cp.async one when the line says so: a route that quietly fell back to
 * another would pass the comparisons. */
static void check_tc_ran(const char *what, const char *kernel)
{
    long n = traced(kernel);
    const char *d = gpu->detail ? gpu->detail : "";
    if (n < 0 || !bf16_mode || (!strstr(d, "tensor-core+") && !strstr(d, "tensor-core (cp.async")))
        return;
    CHECKF(what, n > 0, "no launch of %s", kernel);
}

/* Largest normalized error of the GPU's dq over the rows of the n sequences
 * s (the only rows attention_bwd writes) against the CPU's. */
static double dq_rows_err(const struct two *dq, int stride, const struct bk_attn_seq *s, int n)
{
    float *h = rl_malloc(dq->n * sizeof *h);
    gpu->download(h, dq->g, dq->n * sizeof *h);
    double e = 0;
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)s[i].row * stride;
        double ei = harness_max_rel_err(h + o, dq->c + o, (size_t)s[i].n * stride);
        e = ei > e || ei != ei ? ei : e;
    }
    free(h);
    return e;
}

static void test_attention(int hd, bool kv16)
{
    const char *kvn = kv16 ? ", bf16 KV cache" : "";
    enum { NS = 6 };
    int nh = hd == 64 ? 6 : 4, nkv = 2, qs = nh * hd, kvs = 2 * nkv * hd;
    /* 70 and 80 rows span several tiles of the tiled (32 rows) and the
     * tensor-core (64) kernels; the 80 continue 129 cached positions (a
     * prompt after a shared prefix), so their keys span four tiles, and the
     * last query of their first tile (position 192) is the only one to see
     * the first key of the fourth: a tile edge that each kernel's skipping
     * of masked tiles must get right. The 140 take two blocks of tc-wide's
     * 128 queries, the second's rows all in its first warp (the others'
     * padding) */
    int len[NS] = {17, 1, 70, 5, 80, 140}, pos[NS] = {0, 30, 0, 11, 129, 0};
    int rows = 0, keys = 0;
    size_t p_total = 0;
    for (int s = 0; s < NS; s++) {
        rows += len[s];
        keys += pos[s] + len[s];
        p_total += (size_t)nh * len[s] * (pos[s] + len[s]);
    }
    /* Inputs are bf16 values, so that the bf16 routes round only P and
     * dS; and each query row of each head is its sequence's new key row
     * (of the head's kv head), with a scale that makes that key about half
     * of the row's weight. A kernel that drops a key at a tile's edge, or
     * a tile of them, drops the heaviest one: far beyond the bf16 bound. */
    float scale = 16.0f / hd;       /* own-key score about 5 at either head_dim */
    float *hq = rand_host((size_t)rows * qs, 1), *hknew = rand_host((size_t)rows * qs, 1);
    bf16_values(hknew, (size_t)rows * qs);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < nh; h++)
            memcpy(hq + (size_t)r * qs + (size_t)h * hd, hknew + (size_t)r * qs + (size_t)(h / (nh / nkv)) * hd,
                   hd * sizeof *hq);
    struct two q = both(hq, (size_t)rows * qs), kv = rand_bf16_both((size_t)keys * kvs);
    struct two out = poisoned((size_t)rows * qs), lse = poisoned((size_t)rows * nh);
    struct two p = rand_both(p_total, 1);
    uint16_t *kv16g = kv16 ? bf16_gpu(&kv) : NULL;   /* the GPU's cache, when bf16 */
    struct bk_attn_seq sc[NS], sg[NS];
    int row = 0, key = 0;
    size_t poff = 0;
    for (int s = 0; s < NS; s++) {
        sc[s] = (struct bk_attn_seq){.row = row, .n = len[s], .pos = pos[s], .kv_stride = kvs,
                                     .k = kv.c + (size_t)key * kvs, .v = kv.c + (size_t)key * kvs + nkv * hd,
                                     .p = p.c + poff, .lse = lse.c + (size_t)row * nh};
        sg[s] = sc[s];
        sg[s].k = kv.g + (size_t)key * kvs;
        sg[s].v = kv.g + (size_t)key * kvs + nkv * hd;
        if (kv16) {
            sg[s].k = (const float *)(kv16g + (size_t)key * kvs);
            sg[s].v = (const float *)(kv16g + (size_t)key * kvs + nkv * hd);
            sg[s].kv_bf16 = true;
        }
        sg[s].p = p.g + poff;
        sg[s].lse = lse.g + (size_t)row * nh;
        row += len[s];
        key += pos[s] + len[s];
        poff += (size_t)nh * len[s] * (pos[s] + len[s]);
    }
    /* the new rows of each sequence appended at its positions, as generation
     * does before attending (here in place: the rows are their own cache) */
    struct two knew = both(hknew, (size_t)rows * qs), vnew = rand_bf16_both((size_t)rows * qs);
    free(hq), free(hknew);
    cpu->kv_append(sc, NS, knew.c, vnew.c, qs, nkv * hd);
    gpu->kv_append(sg, NS, knew.g, vnew.g, qs, nkv * hd);
    const char *append = harness_name("kv_append: each sequence's new K/V rows at its positions (head_dim %d%s)", hd, kvn);
    if (kv16) {
        double e = bf16_err(kv16g, kv.c, kv.n);
        CHECKF(append, e == 0, "normalized error %.3g", e);
    } else {
        expect(append, &kv, 0);
    }
    drop(&knew), drop(&vnew);
    /* the kernels the device line names: tc-wide's, tc-pipe's (cp.async) or tc's */
    const char *det = gpu->detail ? gpu->detail : "";
    bool wide = strstr(det, "tensor-core (cp.async, wide)"), pipe = wide || strstr(det, "tensor-core (cp.async)");
    cpu->attention(out.c, qs, q.c, qs, sc, NS, nh, nkv, hd, scale);
    traced("");
    gpu->attention(out.g, qs, q.g, qs, sg, NS, nh, nkv, hd, scale);
    check_tc_ran(harness_name("attention: the tensor-core kernel ran (head_dim %d%s)", hd, kvn),
                 wide   ? "attention (tensor cores, wide)\n"
                 : pipe ? "attention (tensor cores, cp.async)\n"
                        : "attention (tensor cores)\n");
    expect(harness_name("attention: output (prefill, continuation, decode; GQA; head_dim %d%s)", hd, kvn), &out,
           attn_tol);
    expect(harness_name("attention: log-sum-exp per query row and head (head_dim %d%s)", hd, kvn), &lse, attn_tol);
    if (kv16) {
        gpu->free(kv16g);
        drop(&q), drop(&kv), drop(&out), drop(&lse), drop(&p);
        return;
    }

    /* backward on the sequences at pos 0 (training's case) and on the
     * continuation (the interface allows it) */
    enum { NB = 4 };
    int bs[NB] = {0, 2, 4, 5};
    struct bk_attn_seq bc[NB], bg[NB];
    struct two dout = rand_bf16_both((size_t)rows * qs), dq = poisoned((size_t)rows * qs);
    struct two dkv = rand_both((size_t)keys * kvs, 1), dp = rand_both(p_total, 1);
    for (int i = 0; i < NB; i++) {
        int s = bs[i];
        bc[i] = sc[s];
        bg[i] = sg[s];
        size_t ko = (size_t)(sc[s].k - kv.c);
        size_t po = (size_t)(sc[s].p - p.c);
        bc[i].dk = dkv.c + ko;
        bc[i].dv = dkv.c + ko + nkv * hd;
        bc[i].dp = dp.c + po;
        bg[i].dk = dkv.g + ko;
        bg[i].dv = dkv.g + ko + nkv * hd;
        bg[i].dp = dp.g + po;
    }
    cpu->attention_bwd(dq.c, qs, dout.c, qs, q.c, out.c, qs, bc, NB, nh, nkv, hd, scale);
    traced("");
    gpu->attention_bwd(dq.g, qs, dout.g, qs, q.g, out.g, qs, bg, NB, nh, nkv, hd, scale);
    if (pipe)   /* tc-pipe and tc-wide take both directions (tc-fwd and auto's choice may not) */
        check_tc_ran(harness_name("attention_bwd: the tensor-core kernels ran (head_dim %d)", hd),
                     wide ? "attention_bwd (keys, tensor cores, wide)\n"
                          : "attention_bwd (keys, tensor cores, cp.async)\n");
    double e = dq_rows_err(&dq, qs, bc, NB);
    CHECKF(harness_name("attention_bwd: dq (overwritten; head_dim %d)", hd), e <= attn_tol, "normalized error %.3g", e);
    expect(harness_name("attention_bwd: dk, dv += (no other rows touched; head_dim %d)", hd), &dkv, attn_tol);

    /* The GPU's O again at an odd row stride, NaN between the rows: D =
     * rowsum(dO * O) from the scalar kernel (the vectorized one reads rows
     * aligned to four elements); dq is a function of D, so it shows a wrong
     * one. (The CPU takes D as rowsum(P * dP): O is unused there.) dk, dv
     * add to the first run's and are not compared. */
    int os = qs + 1;
    float *ho = rl_malloc((size_t)rows * os * sizeof *ho);
    gpu->download(ho, out.g, out.n * sizeof *ho);
    for (int r = rows - 1; r >= 0; r--) {
        memmove(ho + (size_t)r * os, ho + (size_t)r * qs, (size_t)qs * sizeof *ho);
        ho[(size_t)r * os + qs] = NAN;
    }
    struct two odd = both(ho, (size_t)rows * os), dq2 = poisoned((size_t)rows * qs);
    free(ho);
    cpu->attention_bwd(dq2.c, qs, dout.c, qs, q.c, odd.c, os, bc, NB, nh, nkv, hd, scale);
    gpu->attention_bwd(dq2.g, qs, dout.g, qs, q.g, odd.g, os, bg, NB, nh, nkv, hd, scale);
    e = dq_rows_err(&dq2, qs, bc, NB);
    CHECKF(harness_name("attention_bwd: dq with O at an odd row stride (head_dim %d)", hd), e <= attn_tol,
           "normalized error %.3g", e);
    drop(&q), drop(&kv), drop(&out), drop(&lse), drop(&p), drop(&dout), drop(&dq), drop(&dkv), drop(&dp);
    drop(&odd), drop(&dq2);
}

/* Decode steps over long contexts: ns sequences of len[s] (1 to 4) queries
 * after pos[s] cached keys, in groups of nh / nkv query heads (beyond 8:
 * the per-query kernel's, not the split kernel's), over an fp32 or a bf16
 * cache (kv16: the GPU's in bf16, the CPU's the same values in fp32).
 * Scores spread over several units so that the softmax is neither flat nor
 * one-hot. Where the emulation traces launches and the split kernel is on,
 * it must be the one that ran. */
static void test_decode(int hd, int nh, int nkv, bool kv16, int ns, const int *len, const int *pos, const char *what)
{
    int qs = nh * hd, kvd = nkv * hd, rows = 0;
    size_t keys = 0, p_total = 0;
    for (int s = 0; s < ns; s++) {
        rows += len[s];
        keys += (size_t)pos[s] + len[s];
        p_total += (size_t)nh * len[s] * (pos[s] + len[s]);
    }
    float scale = 3.0f / sqrtf((float)hd);
    struct two q = rand_bf16_both((size_t)rows * qs), k = rand_bf16_both(keys * kvd), v = rand_bf16_both(keys * kvd);
    struct two out = poisoned((size_t)rows * qs), lse = poisoned((size_t)rows * nh), p = rand_both(p_total, 1);
    uint16_t *k16 = kv16 ? bf16_gpu(&k) : NULL, *v16 = kv16 ? bf16_gpu(&v) : NULL;
    struct bk_attn_seq *sc = rl_malloc(ns * sizeof *sc), *sg = rl_malloc(ns * sizeof *sg);
    int row = 0;
    size_t key = 0, poff = 0;
    for (int s = 0; s < ns; s++) {
        sc[s] = (struct bk_attn_seq){.row = row, .n = len[s], .pos = pos[s], .kv_stride = kvd, .k = k.c + key * kvd,
                                     .v = v.c + key * kvd, .p = p.c + poff, .lse = lse.c + (size_t)row * nh};
        sg[s] = sc[s];
        sg[s].k = kv16 ? (const float *)(k16 + key * kvd) : k.g + key * kvd;
        sg[s].v = kv16 ? (const float *)(v16 + key * kvd) : v.g + key * kvd;
        sg[s].kv_bf16 = kv16;
        sg[s].p = p.g + poff;
        sg[s].lse = lse.g + (size_t)row * nh;
        row += len[s];
        key += (size_t)pos[s] + len[s];
        poff += (size_t)nh * len[s] * (pos[s] + len[s]);
    }
    traced("");
    cpu->attention(out.c, qs, q.c, qs, sc, ns, nh, nkv, hd, scale);
    gpu->attention(out.g, qs, q.g, qs, sg, ns, nh, nkv, hd, scale);
    long split = traced("attention (split decode)");
    const char *kvn = kv16 ? ", bf16 KV cache" : "";
    expect(harness_name("attention, decode steps, %s: output (head_dim %d, %d heads, %d kv%s)", what, hd, nh, nkv,
                        kvn), &out, 1e-5);
    expect(harness_name("attention, decode steps, %s: log-sum-exp (head_dim %d, %d heads, %d kv%s)", what, hd, nh,
                        nkv, kvn), &lse, 1e-5);
    if (split >= 0 && gpu->detail && strstr(gpu->detail, "split decode")) {
        bool want = nh / nkv <= 8;
        CHECKF(harness_name("attention, decode steps, %s: %s the split kernel (%d heads, %d kv)", what,
                            want ? "on" : "beyond", nh, nkv), (split > 0) == want, "%ld split launches", split);
    }
    if (kv16)
        gpu->free(k16), gpu->free(v16);
    free(sc), free(sg);
    drop(&q), drop(&k), drop(&v), drop(&out), drop(&lse), drop(&p);
}

/* Contexts of 1 to 2002 keys (one to sixteen splits of the split kernel,
 * and contexts that are not a multiple of their split); and 40 sequences,
 * more than one launch takes (ATTN_SEQS). */
static void test_decodes(void)
{
    int len[40] = {1, 3, 1, 4, 2}, pos[40] = {0, 62, 700, 1100, 2000};
    const char *longer = "up to 2002 keys";
    test_decode(64, 8, 2, false, 5, len, pos, longer);
    test_decode(128, 8, 1, false, 5, len, pos, longer);
    test_decode(64, 12, 1, false, 5, len, pos, longer);
    for (int s = 0; s < 40; s++)
        len[s] = 1 + s % 4, pos[s] = 37 * s % 301;
    test_decode(64, 8, 2, false, 40, len, pos, "40 sequences");
    if (!strcmp(gpu->name, "cuda")) {       /* the CPU (devsim) holds no bf16 cache */
        int l5[5] = {1, 3, 1, 4, 2}, p5[5] = {0, 62, 700, 1100, 2000};
        test_decode(64, 8, 2, true, 5, l5, p5, longer);
        test_decode(128, 8, 1, true, 5, l5, p5, longer);
    }
}

/* kv_append into a bf16 cache rounds each value to nearest, ties to even
 * (st_f32_to_bf16's rounding), and writes nothing but its rows. */
static void test_kv_append_bf16(void)
{
    enum { KVD = 40, ROWS = 9, CAP = 16 };
    float *src = rand_host((size_t)2 * ROWS * KVD, 3);
    /* ties: halfway between two bf16 values, to the even one (1 and 1 + 2^-6) */
    src[0] = 1.0f + 0x1p-8f, src[1] = 1.0f + 3 * 0x1p-8f, src[2] = -(1.0f + 0x1p-8f);
    float *gsrc = gpu->alloc(sizeof(float) * 2 * ROWS * KVD);
    gpu->upload(gsrc, src, sizeof(float) * 2 * ROWS * KVD);
    size_t nc = (size_t)2 * CAP * KVD;       /* two sequences' caches, k | v rows interleaved */
    uint16_t *cache = gpu->alloc(nc * 2 * sizeof *cache), *h = rl_malloc(nc * 2 * sizeof *h);
    for (size_t i = 0; i < 2 * nc; i++)
        h[i] = 0x7fc1;                        /* a NaN: what is not written stays so */
    gpu->upload(cache, h, nc * 2 * sizeof *h);
    int len[2] = {6, 3}, pos[2] = {2, 13};    /* rows 0-5 and 6-8 of the source */
    struct bk_attn_seq s[2];
    for (int i = 0; i < 2; i++)
        s[i] = (struct bk_attn_seq){.row = i ? 6 : 0, .n = len[i], .pos = pos[i], .kv_stride = 2 * KVD,
                                    .kv_bf16 = true, .k = (const float *)(cache + (size_t)i * CAP * 2 * KVD),
                                    .v = (const float *)(cache + (size_t)i * CAP * 2 * KVD + KVD)};
    gpu->kv_append(s, 2, gsrc, gsrc + KVD, 2 * KVD, KVD);
    gpu->download(h, cache, nc * 2 * sizeof *h);
    long bad = 0;
    for (int i = 0; i < 2; i++)
        for (int t = 0; t < CAP; t++)
            for (int d = 0; d < 2 * KVD; d++) {
                int r = t - pos[i];
                bool written = r >= 0 && r < len[i];
                uint16_t want = written ? st_f32_to_bf16(src[(size_t)(s[i].row + r) * 2 * KVD + d]) : 0x7fc1;
                bad += h[((size_t)i * CAP + t) * 2 * KVD + d] != want;
            }
    CHECKF("kv_append into a bf16 cache: each value to nearest (ties to even), nothing else written", bad == 0,
           "%ld of %zu values differ", bad, 2 * nc);
    gpu->free(gsrc), gpu->free(cache);
    free(src), free(h);
}

/* rope_kv_append against the CPU's, and against the backend's own rope
 * then kv_append: the same bits in q|k|v and in the caches, unwritten
 * cache rows included. 35 sequences (more than a launch takes: 32): a
 * prefill of 5 rows, one of 3, then decode steps. x: the q|k|v rows, fp32
 * or bf16 activations (x2: a second buffer of the same kind); kv16: bf16
 * caches. */
enum { RKA_SEQS = 35, RKA_NH = 6, RKA_NKV = 2, RKA_HD = 64, RKA_CAP = 16, RKA_LEN = 64 };
static void check_rope_kv_append(const char *what, struct two *x, float *x2, int rows, const int *row_pos,
                                 const struct bk_attn_seq *proto, bool act, bool kv16)
{
    int kvd = RKA_NKV * RKA_HD, stride = (RKA_NH + 2 * RKA_NKV) * RKA_HD;
    size_t nc = (size_t)RKA_SEQS * RKA_CAP * kvd, esz = kv16 ? 2 : 4, xesz = act ? 2 : 4;
    struct two c, sv;
    rope_tables(RKA_LEN, RKA_HD, &c, &sv);
    int *gpos = ints_gpu(row_pos, rows);
    /* caches: the CPU's fp32 (zeros), the GPU's two poisoned with NaN bits */
    float *ck = cpu->alloc(nc * 4), *cv = cpu->alloc(nc * 4);
    char *poison = rl_malloc(nc * esz);
    for (size_t i = 0; i < nc * esz / 2; i++)
        ((uint16_t *)poison)[i] = 0x7fc1;
    char *g[4];                                   /* k, v of the fused op; k, v of the two ops */
    for (int i = 0; i < 4; i++) {
        g[i] = gpu->alloc(nc * esz);
        gpu->upload(g[i], poison, nc * esz);
    }
    struct bk_attn_seq sc[RKA_SEQS], s1[RKA_SEQS], s2[RKA_SEQS];
    for (int q = 0; q < RKA_SEQS; q++) {
        size_t o = (size_t)q * RKA_CAP * kvd;
        sc[q] = s1[q] = s2[q] = proto[q];
        sc[q].k = ck + o, sc[q].v = cv + o, sc[q].kv_bf16 = false;
        s1[q].k = (const float *)(g[0] + o * esz), s1[q].v = (const float *)(g[1] + o * esz);
        s2[q].k = (const float *)(g[2] + o * esz), s2[q].v = (const float *)(g[3] + o * esz);
        s1[q].kv_bf16 = s2[q].kv_bf16 = kv16;
    }
    gpu->copy(x2, x->g, (size_t)rows * stride);
    cpu->rope_kv_append(x->c, stride, row_pos, RKA_NH, RKA_NKV, RKA_HD, c.c, sv.c, sc, RKA_SEQS);
    gpu->rope_kv_append(x->g, stride, gpos, RKA_NH, RKA_NKV, RKA_HD, c.g, sv.g, s1, RKA_SEQS);
    if (act)
        expect_act(harness_name("%s: q and k rotated", what), x, 1e-2);
    else
        expect(harness_name("%s: q and k rotated", what), x, 1e-5);
    /* the caches' written rows against the CPU's, each error relative to
     * the largest value written: a rotated element near zero carries the
     * absolute error of its larger terms (sin and cos differ by an ulp on
     * a GPU) */
    char *hk = rl_malloc(nc * esz);
    double worst = 0, largest = 0;
    for (int kv = 0; kv < 2; kv++) {
        gpu->download(hk, g[kv], nc * esz);
        for (int q = 0; q < RKA_SEQS; q++)
            for (int i = 0; i < proto[q].n; i++)
                for (int d = 0; d < kvd; d++) {
                    size_t o = (size_t)q * RKA_CAP * kvd + (size_t)(proto[q].pos + i) * kvd + d;
                    float got = kv16 ? st_bf16_to_f32(((uint16_t *)hk)[o]) : ((float *)hk)[o];
                    float want = (kv ? cv : ck)[o];
                    double e = fabs(got - want);
                    if (e != e)
                        e = INFINITY;
                    worst = fmax(worst, e);
                    largest = fmax(largest, fabs(want));
                }
    }
    worst /= largest + 1e-30;
    double tol = act || kv16 ? 1e-2 : 1e-5;
    CHECKF(harness_name("%s: the caches' new rows", what), worst <= tol, "worst relative error %.3g > %.1g", worst,
           tol);
    /* the same bits as rope, then kv_append */
    gpu->rope(x2, stride, gpos, rows, RKA_NH + RKA_NKV, RKA_HD, c.g, sv.g, false);
    gpu->kv_append(s2, RKA_SEQS, act_at_g(x2, RKA_NH * RKA_HD, act), act_at_g(x2, RKA_NH * RKA_HD + kvd, act),
                   stride, kvd);
    bool same = same_bytes(x->g, x2, (size_t)rows * stride * xesz);
    for (int kv = 0; kv < 2; kv++)
        same = same && same_bytes(g[kv], g[2 + kv], nc * esz);
    CHECK(harness_name("%s: the bits of rope then kv_append (q|k|v and the caches)", what), same);
    free(hk), free(poison);
    for (int i = 0; i < 4; i++)
        gpu->free(g[i]);
    cpu->free(ck), cpu->free(cv);
    drop(&c), drop(&sv);
    gpu->free(gpos);
}

/* The sequences of check_rope_kv_append: rows in order, positions before
 * RKA_CAP; row_pos[r] = its position */
static int rka_seqs(struct bk_attn_seq *s, int *row_pos)
{
    int row = 0;
    for (int q = 0; q < RKA_SEQS; q++) {
        int n = q == 0 ? 5 : q == 1 ? 3 : 1, pos = (q * 5) % (RKA_CAP - n + 1);
        s[q] = (struct bk_attn_seq){.row = row, .n = n, .pos = pos, .kv_stride = RKA_NKV * RKA_HD};
        for (int i = 0; i < n; i++)
            row_pos[row + i] = pos + i;
        row += n;
    }
    return row;
}

static void test_rope_kv_append(bool kv16)
{
    struct bk_attn_seq s[RKA_SEQS];
    int row_pos[8 + RKA_SEQS], stride = (RKA_NH + 2 * RKA_NKV) * RKA_HD;
    int rows = rka_seqs(s, row_pos);
    struct two x = rand_both((size_t)rows * stride, 2);
    float *x2 = gpu->alloc((size_t)rows * stride * sizeof(float));
    check_rope_kv_append(kv16 ? "rope_kv_append, bf16 caches" : "rope_kv_append", &x, x2, rows, row_pos, s, false,
                         kv16);
    gpu->free(x2);
    drop(&x);
}

static void test_elementwise(void)
{
    int n = 29, d = 300;
    /* f = 2052: four columns a thread, three column blocks (the last one
     * partial); 1030: not a multiple of four, an element a thread */
    for (int f = 2052; f >= 1030; f -= 1022) {
        struct two gu = rand_both((size_t)n * 2 * f, 4), h = poisoned((size_t)n * f);
        cpu->swiglu(h.c, gu.c, n, f);
        gpu->swiglu(h.g, gu.g, n, f);
        expect(harness_name("swiglu, f = %d", f), &h, 1e-5);
        struct two dh = rand_both((size_t)n * f, 1), dgu = poisoned((size_t)n * 2 * f);
        cpu->swiglu_bwd(dgu.c, dh.c, gu.c, n, f);
        gpu->swiglu_bwd(dgu.g, dh.g, gu.g, n, f);
        expect(harness_name("swiglu_bwd (overwrites d gate | d up), f = %d", f), &dgu, 1e-5);
        drop(&gu), drop(&h), drop(&dh), drop(&dgu);
    }

    int idx[7] = {5, 0, 12, 3, 28, 17, 9};
    int *gidx = ints_gpu(idx, 7);
    struct two src = rand_both((size_t)n * d, 1), g7 = poisoned((size_t)7 * d);
    cpu->gather_rows(g7.c, src.c, idx, 7, d);
    gpu->gather_rows(g7.g, src.g, gidx, 7, d);
    expect("gather_rows", &g7, 0);
    struct two dst = rand_both((size_t)n * d, 1);
    cpu->scatter_add_rows(dst.c, g7.c, idx, 7, d);
    gpu->scatter_add_rows(dst.g, g7.g, gidx, 7, d);
    expect("scatter_add_rows", &dst, 1e-6);
    gpu->free(gidx);

    struct two y = rand_both((size_t)n * d, 1);
    cpu->add(y.c, src.c, (size_t)n * d - 3);        /* an element a thread */
    gpu->add(y.g, src.g, (size_t)n * d - 3);
    cpu->add(y.c, src.c, (size_t)n * d);            /* four a thread */
    gpu->add(y.g, src.g, (size_t)n * d);
    expect("add (n not a multiple of 4, then one)", &y, 1e-6);
    struct two b = rand_both(d, 1);
    cpu->add_bias(y.c, b.c, n, d);
    gpu->add_bias(y.g, b.g, n, d);
    expect("add_bias", &y, 1e-6);
    cpu->bias_bwd(b.c, y.c, n, d);
    gpu->bias_bwd(b.g, y.g, n, d);
    expect("bias_bwd (column sums +=)", &b, 1e-5);
    cpu->scale(y.c, -0.37f, (size_t)n * d);
    gpu->scale(y.g, -0.37f, (size_t)n * d);
    expect("scale", &y, 1e-6);
    double sc = cpu->sumsq(y.c, (size_t)n * d), sg = gpu->sumsq(y.g, (size_t)n * d);
    CHECKF("sumsq (double)", fabs(sc - sg) <= 1e-9 * sc, "%.17g vs %.17g", sg, sc);
    drop(&src), drop(&g7), drop(&dst), drop(&y), drop(&b);

    int V = 50, ids[12] = {3, 7, 3, 49, 0, 7, 7, 11, 3, 25, 0, 1};
    int *gids = ints_gpu(ids, 12);
    struct two table = rand_both((size_t)V * d, 1), x = poisoned((size_t)12 * d);
    cpu->embed(x.c, table.c, ids, 12, d);
    gpu->embed(x.g, table.g, gids, 12, d);
    expect("embed", &x, 0);
    struct two dx = rand_both((size_t)12 * d, 1);
    cpu->embed_bwd(table.c, dx.c, ids, 12, d);
    gpu->embed_bwd(table.g, dx.g, gids, 12, d);
    /* each table row adds its rows of dx in order, as the CPU does: the same bits */
    expect("embed_bwd (repeated ids add up, in the CPU's order)", &table, 0);
    gpu->free(gids);
    drop(&table), drop(&x), drop(&dx);
}

static void test_vocab(void)
{
    int n = 9, v = 49152;
    int tg[9] = {0, 5, -1, 49151, 100, 7, 3000, -1, 12};
    int *gt = ints_gpu(tg, n);
    struct two logits = rand_both((size_t)n * v, 8), lse = poisoned(n), logp = poisoned(n);
    cpu->logsoftmax(lse.c, logp.c, logits.c, tg, n, v);
    gpu->logsoftmax(lse.g, logp.g, logits.g, gt, n, v);
    expect("logsoftmax: log-sum-exp over 49152 logits", &lse, 1e-6);
    expect("logsoftmax: target log-probs (0 without a target)", &logp, 1e-5);
    float gh[9] = {1, -0.5f, 2, 0.25f, 0, 3, -1, 1, 0.5f};
    struct two g = both(gh, n);
    cpu->logsoftmax_bwd(logits.c, lse.c, tg, g.c, n, v);
    gpu->logsoftmax_bwd(logits.g, lse.g, gt, g.g, n, v);
    expect("logsoftmax_bwd (in place; rows without target or g zeroed)", &logits, 1e-5);
    gpu->free(gt);
    drop(&logits), drop(&lse), drop(&logp), drop(&g);
}

/* A sampler's settings, for the checks' names. */
static const char *sampler_name(const struct sampler *c)
{
    static char s[96];
    int k = snprintf(s, sizeof s, "temperature %g", c->temperature);
    if (c->top_k > 0)
        k += snprintf(s + k, sizeof s - k, ", top-k %d", c->top_k);
    if (c->top_p < 1)
        k += snprintf(s + k, sizeof s - k, ", top-p %g", c->top_p);
    if (c->min_p > 0)
        snprintf(s + k, sizeof s - k, ", min-p %g", c->min_p);
    return s;
}

/* sample_rows on n rows of logits h [n, v] with uniforms u, both sides: the
 * same tokens (a device's sums run in another order, but no u, and no top-p
 * mass, here lies within rounding of a boundary) and log-probs within double
 * rounding. The GPU's outputs start as garbage. */
static void check_sample(const char *what, const float *h, int n, int v, const double *u, const struct sampler *c)
{
    struct two x = both(h, (size_t)n * v);
    int *tc = cpu->alloc(n * sizeof *tc), *tg = gpu->alloc(n * sizeof *tg), *tok = rl_malloc(n * sizeof *tok);
    double *lc = cpu->alloc(n * sizeof *lc), *lg = gpu->alloc(n * sizeof *lg), *lp = rl_malloc(n * sizeof *lp);
    double *ug = gpu->alloc(n * sizeof *ug);
    for (int r = 0; r < n; r++)
        tok[r] = -7, lp[r] = NAN;
    gpu->upload(tg, tok, n * sizeof *tok);
    gpu->upload(lg, lp, n * sizeof *lp);
    gpu->upload(ug, u, n * sizeof *u);
    cpu->sample_rows(tc, lc, x.c, u, n, v, c);
    gpu->sample_rows(tg, lg, x.g, ug, n, v, c);
    gpu->download(tok, tg, n * sizeof *tok);
    gpu->download(lp, lg, n * sizeof *lp);
    int same = 0, worst = -1;
    double e = 0;
    for (int r = 0; r < n; r++) {
        same += tok[r] == tc[r];
        double d = fabs(lp[r] - lc[r]) / fmax(1, fabs(lc[r]));
        if (!(d <= e))
            e = d, worst = r;
    }
    CHECKF(harness_name("sample_rows, %s, %s: the CPU's tokens", what, sampler_name(c)), same == n,
           "%d of %d rows differ", n - same, n);
    CHECKF(harness_name("sample_rows, %s, %s: log-probs", what, sampler_name(c)), e <= 1e-12,
           "row %d: %.17g against %.17g", worst, worst >= 0 ? lp[worst] : 0.0, worst >= 0 ? lc[worst] : 0.0);
    drop(&x);
    cpu->free(tc), gpu->free(tg), cpu->free(lc), gpu->free(lg), gpu->free(ug);
    free(tok), free(lp);
}

static void test_sample_rows(void)
{
    enum { N = 10 };
    int v = 50257;                     /* not a multiple of the GPU's threads */
    float *h = rand_host((size_t)N * v, 8);
    for (size_t i = v; i < 2 * (size_t)v; i++)
        h[i] *= 0.125f;                                   /* row 1: nearly flat */
    h[2 * (size_t)v + 40000] = h[2 * (size_t)v + 100] = 50;  /* row 2: a tie across two runs */
    for (size_t i = 3 * (size_t)v; i < 4 * (size_t)v; i++)
        h[i] = 0.5f;                                      /* row 3: all equal */
    double u[N];
    for (int r = 0; r < N; r++)
        u[r] = rng_uniform_double(&R);
    u[4] = 0;                                             /* the first token with p > 0 */
    u[5] = 1 - 0x1p-53;                                   /* the last */
    float temps[] = {0, 1, 0.7f, 2.5f};
    for (int t = 0; t < 4; t++)
        check_sample("50257 logits", h, N, v, u, &(struct sampler){.temperature = temps[t], .top_p = 1});
    int cpu_tok, tie_tok;
    double lp;
    float greedy[] = {1, 3, 3, 2};                        /* ties: the lower id */
    int *tg = gpu->alloc(sizeof *tg);
    double *lg = gpu->alloc(sizeof *lg), *ug = gpu->alloc(sizeof *ug);
    struct two x = both(greedy, 4);
    gpu->sample_rows(tg, lg, x.g, ug, 1, 4, &(struct sampler){.temperature = 0, .top_p = 1});
    gpu->download(&tie_tok, tg, sizeof tie_tok);
    cpu_tok = sample_plain(greedy, 4, 0, 0, NULL, &lp);
    CHECKF("sample_rows: greedy ties go to the lower id", tie_tok == 1 && cpu_tok == 1, "%d, CPU %d", tie_tok,
           cpu_tok);
    drop(&x);
    gpu->free(tg), gpu->free(lg), gpu->free(ug);
    /* fewer logits than the GPU's threads, and a single one */
    for (int t = 0; t < 4; t++) {
        struct sampler c = {.temperature = temps[t], .top_p = 1};
        check_sample("37 logits", h, N, 37, u, &c);
        check_sample("1 logit", h, N, 1, u, &c);
    }
    free(h);
}

/* sample_rows with top-k, top-p and min-p: the kept prefix of the tokens by
 * probability ends inside runs of equal probabilities (an all-equal row,
 * rows of logits in steps of 0.5) and in rows from peaked to nearly flat;
 * rows 0-4 and 10-11 have thousands of candidates (the kernel searches),
 * rows 5-9 at most a block's worth (it sorts them). The draw then takes the
 * CPU's token. Draws touch neither the GEMMs nor the attention, so the
 * variants that change only those skip this (it is the slowest test on the
 * emulation). */
static void test_sample_warped(void)
{
    const char *attn = getenv("RL_CUDA_ATTN"), *math = getenv("RL_CUDA_MATH");
    if ((attn && *attn && strcmp(attn, "auto")) || (math && !strcmp(math, "bf16"))) {
        harness_skip("sample_rows with top-k, top-p and min-p",
                     "draws do not depend on the GEMM mode or the attention route: run with the defaults or fp32");
        return;
    }
    enum { N = 12 };
    int v = 50257;
    float *h = rand_host((size_t)N * v, 8);
    for (size_t i = v; i < 2 * (size_t)v; i++)
        h[i] *= 0.125f;                                   /* row 1: nearly flat */
    for (size_t i = 2 * (size_t)v; i < 3 * (size_t)v; i++)
        h[i] = 0.5f;                                      /* row 2: all equal */
    for (size_t i = 3 * (size_t)v; i < 4 * (size_t)v; i++)
        h[i] = roundf(h[i] * 0.25f) * 0.5f;               /* row 3: a few values, each many times */
    for (size_t i = 4 * (size_t)v; i < 5 * (size_t)v; i++)
        h[i] *= 3;                                        /* row 4: peaked */
    h[5 * (size_t)v + 7] = h[5 * (size_t)v + 40000] = 60; /* row 5: two top tokens, tied */
    for (int r = 6; r < 10; r++)     /* rows 6-9: every 71st token of the first 700 (or 300 stepped) stands out */
        for (int i = 0; i < v; i++) {
            float *x = &h[(size_t)r * v + i];
            bool out = i % 71 == 0 && i / 71 < (r % 2 ? 300 : 700);
            *x = !out ? -60 : r % 2 ? roundf(*x) * 0.5f : *x;
        }
    double u[N];
    for (int r = 0; r < N; r++)
        u[r] = rng_uniform_double(&R);
    /* u just below 1 only where the last token's mass is far above the
     * total's rounding: in rows 6-9 the 60-below tokens add less than an ulp,
     * so whether u * total is ever passed depends on the order of the sums */
    u[8] = u[10] = 0;
    u[11] = 1 - 0x1p-53;
    struct sampler cs[] = {
        {.temperature = 1, .top_p = 1, .top_k = 1},
        {.temperature = 1, .top_p = 1, .top_k = 50},
        {.temperature = 0.7f, .top_p = 1, .top_k = 1000},
        {.temperature = 1, .top_p = 1, .top_k = 60000},   /* more than the vocabulary */
        {.temperature = 1, .top_p = 0.9f},
        {.temperature = 2.5f, .top_p = 0.5f},
        {.temperature = 1, .top_p = 1e-9f},                /* only the top token */
        {.temperature = 1, .top_p = 0.8f, .top_k = 40},
        {.temperature = 1, .top_p = 1, .min_p = 0.05f},
        {.temperature = 0.8f, .top_p = 0.95f, .top_k = 100, .min_p = 0.02f},
    };
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++)
        check_sample("50257 logits", h, N, v, u, &cs[k]);
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k += 3) {
        check_sample("37 logits", h, N, 37, u, &cs[k]);
        check_sample("1 logit", h, N, 1, u, &cs[k]);
    }
    free(h);
}

static void test_adamw(void)
{
    size_t n = 100003;
    struct two w = rand_both(n, 1), g = rand_both(n, 0.1f), m = rand_both(n, 0.01f), v = rand_both(n, 0.001f);
    /* v is a second moment: non-negative */
    float *vh = rl_malloc(n * sizeof *vh);
    for (size_t i = 0; i < n; i++)
        vh[i] = fabsf(v.c[i]);
    memcpy(v.c, vh, n * sizeof *vh);
    gpu->upload(v.g, vh, n * sizeof *vh);
    free(vh);
    /* the gradient scaled (a clipping coefficient) in two of the steps */
    static const float gscale[3] = {0.37f, 1, 0.0625f};
    for (int step = 1; step <= 3; step++) {
        double bc1 = 1 - pow(0.9, step), bc2s = sqrt(1 - pow(0.95, step));
        float gs = gscale[step - 1];
        cpu->adamw(w.c, g.c, gs, m.c, v.c, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, bc1, bc2s);
        gpu->adamw(w.g, g.g, gs, m.g, v.g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, bc1, bc2s);
    }
    expect("adamw: weights after 3 steps", &w, 1e-6);
    expect("adamw: first moments", &m, 1e-6);
    expect("adamw: second moments", &v, 1e-6);
    drop(&w), drop(&g), drop(&m), drop(&v);
}

/* A linear layer's backward: din = dout w, then dw += dout^T in, on both
 * devices; square 1024 products, wide enough for bf16 mode's copies. */
enum { LB = 1024 };
static void linear_backward(struct two *din, struct two *dw, const struct two *dout, const struct two *w,
                            const struct two *in)
{
    cpu->matmul(false, false, LB, LB, LB, 1.0f, dout->c, LB, w->c, LB, 0.0f, din->c, LB);
    gpu->matmul(false, false, LB, LB, LB, 1.0f, dout->g, LB, w->g, LB, 0.0f, din->g, LB);
    cpu->matmul(true, false, LB, LB, LB, 1.0f, dout->c, LB, in->c, LB, 1.0f, dw->c, LB);
    gpu->matmul(true, false, LB, LB, LB, 1.0f, dout->g, LB, in->g, LB, 1.0f, dw->g, LB);
}
/* The CUDA backend reuses its bf16 copy of a product's A for the next
 * product with the same A (dout above), but only while nothing else ran and
 * no product wrote over it: a stale copy would use the old dout. */
static void test_operand_reuse(void)
{
    size_t n = (size_t)LB * LB;
    struct two dout = rand_both(n, 1), w = rand_both(n, 1), in = rand_both(n, 1), din = poisoned(n);
    struct two dw = rand_both(n, 1);
    operand_copies();
    linear_backward(&din, &dw, &dout, &w, &in);
    long copies = operand_copies();
    expect("matmul: dx = dy w, then dw += dy^T x (the same A twice)", &dw, gemm_tol);
    if (copies < 0 || !bf16_mode)
        harness_skip("matmul: the second product reuses the first's copy of A", "no launch trace or not in bf16 mode");
    else   /* dy once, w, x */
        CHECKF("matmul: the second product reuses the first's copy of A", copies == 3, "%ld operand copies", copies);
    cpu->matmul(false, false, LB, LB, LB, 1.0f, dout.c, LB, w.c, LB, 0.0f, din.c, LB);
    gpu->matmul(false, false, LB, LB, LB, 1.0f, dout.g, LB, w.g, LB, 0.0f, din.g, LB);
    cpu->scale(dout.c, -0.5f, n), gpu->scale(dout.g, -0.5f, n);   /* another op changes A between them */
    cpu->matmul(true, false, LB, LB, LB, 1.0f, dout.c, LB, in.c, LB, 1.0f, dw.c, LB);
    gpu->matmul(true, false, LB, LB, LB, 1.0f, dout.g, LB, in.g, LB, 1.0f, dw.g, LB);
    expect("matmul: ... with A scaled between the two", &dw, gemm_tol);
    cpu->matmul(false, false, LB, LB, LB, 1.0f, dout.c, LB, w.c, LB, 0.0f, din.c, LB);
    gpu->matmul(false, false, LB, LB, LB, 1.0f, dout.g, LB, w.g, LB, 0.0f, din.g, LB);
    /* a product writes 64 rows of A: a thin one, which copies no A of its own */
    cpu->matmul(false, true, 64, LB, LB, 1.0f, in.c, LB, w.c, LB, 0.0f, dout.c, LB);
    gpu->matmul(false, true, 64, LB, LB, 1.0f, in.g, LB, w.g, LB, 0.0f, dout.g, LB);
    cpu->matmul(true, false, LB, LB, LB, 1.0f, dout.c, LB, in.c, LB, 1.0f, dw.c, LB);
    gpu->matmul(true, false, LB, LB, LB, 1.0f, dout.g, LB, in.g, LB, 1.0f, dw.g, LB);
    expect("matmul: ... with A written by a product between the two", &dw, gemm_tol);
    drop(&dout), drop(&w), drop(&in), drop(&din), drop(&dw);
}

/* The product x w^T (m x n x k) on the GPU into a fresh host array. */
static float *product_nt(const float *x, const float *w, int m, int n, int k)
{
    float *c = gpu->alloc((size_t)m * n * sizeof *c), *h = rl_malloc((size_t)m * n * sizeof *h);
    gpu->matmul(false, true, m, n, k, 1.0f, x, k, w, k, 0.0f, c, n);
    gpu->download(h, c, (size_t)m * n * sizeof *h);
    gpu->free(c);
    return h;
}
/* x w^T with w marked as parameters must be the same bits as with an
 * unmarked copy of w (a wide product: both take bf16 operands in bf16 mode) */
static void same_product(const char *name, const float *x, const float *wm, const float *wu, int m, int n, int k)
{
    float *a = product_nt(x, wm, m, n, k), *b = product_nt(x, wu, m, n, k);
    CHECK(name, !memcmp(a, b, (size_t)m * n * sizeof *a));
    free(a), free(b);
}
/* The products check_producer_copy runs, into buffers allocated before
 * the producer (alloc and free are ops that end an A copy's life, as any
 * op that may write memory) */
struct copy_check {
    const float *wm, *z;              /* marked weights p x 132 and n x q */
    int n, p, q, r0, rows;
    float *c, *t, *scratch;           /* GPU: n x p, 132 x q, 1 */
};
static float *products_of(const struct copy_check *k, const float *y, int d, bool apart, float **block, float **tr)
{
    float *h = rl_malloc((size_t)k->n * k->p * sizeof *h), *hb = rl_malloc(2 * (size_t)k->rows * k->p * sizeof *hb);
    float *ht = rl_malloc((size_t)d * k->q * sizeof *ht);
    gpu->matmul(false, true, k->n, k->p, d, 1.0f, y, d, k->wm, d, 0.0f, k->c, k->p);
    gpu->download(h, k->c, (size_t)k->n * k->p * sizeof *h);
    if (apart)                                   /* an op between: each product copies A itself */
        gpu->scale(k->scratch, 1.0f, 1);
    gpu->matmul(false, true, k->rows, k->p, d, 1.0f, y + (size_t)k->r0 * d, d, k->wm, d, 0.0f, k->c, k->p);
    gpu->download(hb, k->c, (size_t)k->rows * k->p * sizeof *hb);
    if (apart)
        gpu->scale(k->scratch, 1.0f, 1);
    gpu->matmul(true, false, d, k->q, k->n, 1.0f, y, d, k->z, k->q, 0.0f, k->t, k->q);
    gpu->download(ht, k->t, (size_t)d * k->q * sizeof *ht);
    if (apart)
        gpu->scale(k->scratch, 1.0f, 1);
    /* rows that start 3 elements into one of y's: no block of the copy's rows */
    gpu->matmul(false, true, k->rows, k->p, d, 1.0f, y + 3, d, k->wm, d, 0.0f, k->c, k->p);
    gpu->download(hb + (size_t)k->rows * k->p, k->c, (size_t)k->rows * k->p * sizeof *hb);
    *block = hb, *tr = ht;
    return h;
}
/* y (n x d, on the GPU) as the A of products with marked weights (x w^T,
 * of all rows and of a block of them, a per-sequence product) and, transposed
 * (the dw of a linear layer's backward), with marked z: these thin products
 * take bf16 operands only with a marked one. Run right after the op that
 * wrote y, they take the copy the op wrote (no copy of A of their own), and
 * give the bits of products that each copy A themselves (another op before
 * each). */
static void check_producer_copy(const char *op, const struct copy_check *k, const float *y, int d)
{
    float *b1, *t1, *b2, *t2;
    operand_copies();
    float *a1 = products_of(k, y, d, false, &b1, &t1);
    long made = operand_copies();
    gpu->scale(k->scratch, 1.0f, 1);
    float *a2 = products_of(k, y, d, true, &b2, &t2);
    long own = operand_copies();
    CHECK(harness_name("%s: products of its output are the bits of products that copy it themselves", op),
          !memcmp(a1, a2, (size_t)k->n * k->p * sizeof *a1) && !memcmp(t1, t2, (size_t)d * k->q * sizeof *t1));
    CHECK(harness_name("%s: ... and of a block of its rows (and of rows that start inside one)", op),
          !memcmp(b1, b2, 2 * (size_t)k->rows * k->p * sizeof *b1));
    if (made < 0 || !bf16_mode)
        harness_skip(harness_name("%s: the products take the op's copy", op), "no launch trace or not in bf16 mode");
    else
        CHECKF(harness_name("%s: the products take the op's copy (of whole rows)", op), made == 1 && own == 4,
               "%ld copies of A with the op's, %ld without (1 and 4 expected)", made, own);
    free(a1), free(a2), free(b1), free(b2), free(t1), free(t2);
}

/* Producer ops (rmsnorm, rmsnorm_bwd, add_rmsnorm, swiglu, swiglu_bwd) write a bf16 copy
 * of their output for the next product in bf16 mode (a_copy_for). */
static void test_producer_copies(void)
{
    int n = 600, d = 64, p = 48, q = 40;         /* 600 rows: enough for a copy */
    struct two x = rand_both((size_t)n * d, 1), w = rand_both(d, 1), rstd = poisoned(n);
    struct two y = poisoned((size_t)n * 132), dy = rand_both((size_t)n * d, 1), dw = rand_both(d, 1);
    struct two gu = rand_both((size_t)n * 132, 2), dh = rand_both((size_t)n * 66, 1);
    float *hw = rand_host((size_t)p * 132, 1), *hz = rand_host((size_t)n * q, 1);
    float *wm = gpu->alloc((size_t)p * 132 * sizeof *wm), *z = gpu->alloc((size_t)n * q * sizeof *z);
    struct copy_check k = {wm, z, n, p, q, 37, 100, gpu->alloc((size_t)n * p * sizeof(float)),
                           gpu->alloc((size_t)132 * q * sizeof(float)), gpu->alloc(sizeof(float))};
    gpu->upload(wm, hw, (size_t)p * 132 * sizeof *wm);
    gpu->upload(z, hz, (size_t)n * q * sizeof *z);
    if (gpu->mark_params) {
        gpu->mark_params(wm, (size_t)p * 132);
        gpu->mark_params(z, (size_t)n * q);
    }
    gpu->rmsnorm(y.g, rstd.g, x.g, w.g, n, d, 1e-5f);
    check_producer_copy("rmsnorm", &k, y.g, d);
    gpu->rmsnorm_bwd(x.g, dw.g, dy.g, y.g, w.g, rstd.g, n, d);
    check_producer_copy("rmsnorm_bwd (dx, accumulated)", &k, x.g, d);
    gpu->add_rmsnorm(y.g, rstd.g, x.g, dy.g, w.g, n, d, 1e-5f);
    check_producer_copy("add_rmsnorm", &k, y.g, d);
    gpu->swiglu(y.g, gu.g, n, 64);
    check_producer_copy("swiglu (float4)", &k, y.g, 64);
    gpu->swiglu(y.g, gu.g, n, 66);
    check_producer_copy("swiglu (f = 66)", &k, y.g, 66);
    gpu->swiglu_bwd(y.g, dh.g, gu.g, n, 64);
    check_producer_copy("swiglu_bwd (float4)", &k, y.g, 128);
    gpu->swiglu_bwd(y.g, dh.g, gu.g, n, 66);
    check_producer_copy("swiglu_bwd (f = 66)", &k, y.g, 132);
    int *tg = rl_malloc(n * sizeof *tg), *tgg = gpu->alloc(n * sizeof *tgg);
    float *hg = rl_malloc(n * sizeof *hg);
    for (int i = 0; i < n; i++)                   /* rows without a target, or g = 0, become zeros */
        tg[i] = i % 7 == 3 ? -1 : i % 113, hg[i] = i % 11 == 5 ? 0.0f : 0.5f;
    gpu->upload(tgg, tg, n * sizeof *tg);
    gpu->upload(rstd.g, hg, n * sizeof *hg);
    gpu->logsoftmax(dy.g, x.g, gu.g, tgg, n, 128);   /* gu as n x 128 logits; lse and logp: spare rows */
    gpu->logsoftmax_bwd(gu.g, dy.g, tgg, rstd.g, n, 128);
    check_producer_copy("logsoftmax_bwd", &k, gu.g, 128);
    gpu->free(tgg);
    free(tg), free(hg);
    drop(&x), drop(&w), drop(&rstd), drop(&y), drop(&dy), drop(&dw), drop(&gu), drop(&dh);
    gpu->free(wm), gpu->free(z), gpu->free(k.c), gpu->free(k.t), gpu->free(k.scratch);
    free(hw), free(hz);
}

/* x (n x d) as A against marked w (p x d), and as B against marked dy
 * (n x q) transposed: the two products of a linear layer, into host arrays */
static float *both_products(const float *x, const float *w, const float *dy, int n, int d, int p, int q)
{
    float *c = gpu->alloc((size_t)(n * p + q * d) * sizeof *c), *h = rl_malloc((size_t)(n * p + q * d) * sizeof *h);
    gpu->matmul(false, true, n, p, d, 1.0f, x, d, w, d, 0.0f, c, p);
    gpu->matmul(true, false, q, d, n, 1.0f, dy, q, x, d, 0.0f, c + (size_t)n * p, d);
    gpu->download(h, c, (size_t)(n * p + q * d) * sizeof *h);
    gpu->free(c);
    return h;
}
/* Saved activations, marked like parameters (the model marks xn1, xn2 and h
 * in training): rmsnorm and swiglu write the marked range's bf16 copy at
 * any row count, and the products read it for A and for B (no copies of
 * their own) with the bits of products of an unmarked copy; an upload into
 * the range makes the copy stale. */
static void test_saved_copies(void)
{
    if (!gpu->mark_params) {
        harness_skip("saved activations: products read the bf16 copy their op wrote", "not used by this backend");
        return;
    }
    int n = 100, d = 64, p = 48, q = 40;               /* 100 rows: fewer than an unmarked output's copy needs */
    size_t nd = (size_t)n * d;
    float *saved = gpu->alloc(3 * nd * sizeof *saved), *u = gpu->alloc(nd * sizeof *u);
    float *w = gpu->alloc((size_t)p * d * sizeof *w), *dy = gpu->alloc((size_t)n * q * sizeof *dy);
    struct two x = rand_both(nd, 1), g = rand_both(d, 1), rstd = poisoned(n), gu = rand_both(2 * nd, 2);
    float *hw = rand_host((size_t)p * d, 1), *hdy = rand_host((size_t)n * q, 1), *hx = rand_host(nd, 1);
    gpu->upload(w, hw, (size_t)p * d * sizeof *w);
    gpu->upload(dy, hdy, (size_t)n * q * sizeof *dy);
    gpu->mark_params(w, (size_t)p * d);
    gpu->mark_params(dy, (size_t)n * q);
    gpu->mark_params(saved, 3 * nd);
    free(both_products(saved, w, dy, n, d, p, q));     /* the marked ranges' copies made once */
    gpu->rmsnorm(saved, rstd.g, x.g, g.g, n, d, 1e-5f);
    gpu->swiglu(saved + nd, gu.g, n, d);
    /* the streamed product that ends in swiglu writes the copy too */
    struct two wgu = rand_both(2 * (size_t)d * d, 1), gu2 = poisoned(2 * nd);
    gpu->mark_params(wgu.g, 2 * (size_t)d * d);
    gpu->matmul_rows_swiglu(saved + 2 * nd, gu2.g, x.g, wgu.g, n, d, d);
    const char *what[3] = {"rmsnorm", "swiglu", "matmul_rows_swiglu"};
    for (int i = 0; i < 3; i++) {
        const float *y = saved + i * nd;
        traced("");
        float *a = both_products(y, w, dy, n, d, p, q);
        long copies = traced("bf16 copy of");         /* of operands or of marked ranges */
        gpu->copy(u, y, nd);
        float *b = both_products(u, w, dy, n, d, p, q);
        CHECK(harness_name("saved activations (%s): products of the marked output are the bits of an unmarked copy's",
                           what[i]), !memcmp(a, b, (size_t)(n * p + q * d) * sizeof *a));
        if (copies < 0 || !bf16_mode)
            harness_skip(harness_name("saved activations (%s): the products copy nothing", what[i]),
                         "no launch trace or not in bf16 mode");
        else
            CHECKF(harness_name("saved activations (%s): the products copy nothing", what[i]), copies == 0,
                   "%ld operand copies", copies);
        free(a), free(b);
    }
    gpu->upload(saved, hx, nd * sizeof *hx);           /* not through rmsnorm: the copy goes stale */
    gpu->upload(u, hx, nd * sizeof *hx);
    float *a = both_products(saved, w, dy, n, d, p, q), *b = both_products(u, w, dy, n, d, p, q);
    CHECK("saved activations: after an upload, products read the new values",
          !memcmp(a, b, (size_t)(n * p + q * d) * sizeof *a));
    free(a), free(b);
    /* a product that writes into the range (c = saved + nd) */
    gpu->matmul(false, true, n, d, d, 1.0f, u, d, u, d, 0.0f, saved + nd, d);
    gpu->copy(u, saved + nd, nd);
    a = both_products(saved + nd, w, dy, n, d, p, q), b = both_products(u, w, dy, n, d, p, q);
    CHECK("saved activations: after a product wrote them, products read the new values",
          !memcmp(a, b, (size_t)(n * p + q * d) * sizeof *a));
    free(a), free(b);
    /* an output that covers a marked range only in part: that copy goes stale */
    float *part = gpu->alloc(nd * sizeof *part), *half = part + nd / 2;
    gpu->mark_params(half, nd / 2);
    free(both_products(half, w, dy, n / 2, d, p, q));
    gpu->rmsnorm(part, rstd.g, x.g, g.g, n, d, 1e-5f);
    gpu->copy(u, half, nd / 2);
    a = both_products(half, w, dy, n / 2, d, p, q), b = both_products(u, w, dy, n / 2, d, p, q);
    CHECK("saved activations: an output over part of a marked range makes its copy stale",
          !memcmp(a, b, (size_t)(n / 2 * p + q * d) * sizeof *a));
    gpu->free(part);
    free(a), free(b), free(hw), free(hdy), free(hx);
    drop(&x), drop(&g), drop(&rstd), drop(&gu), drop(&wgu), drop(&gu2);
    gpu->free(saved), gpu->free(u), gpu->free(w), gpu->free(dy);
}

/* Parameters (mark_params): the CUDA backend's products read a bf16 copy of
 * them in bf16 mode. The products must not change, after each kind of
 * write to the parameters too (a stale copy would keep the old values);
 * and thin products (decode steps), which take the copy where unmarked
 * weights take cuBLAS's own rounding, must agree with the CPU. */
static void test_params(void)
{
    if (!gpu->mark_params) {
        harness_skip("mark_params: products with marked parameters", "not used by this backend");
        return;
    }
    int m = 1024, n = 1024, k = 64;   /* m n / (m + n) = 512: wide */
    size_t nw = (size_t)n * k;
    float *hw = rand_host(nw, 1), *hx = rand_host((size_t)m * k, 1), *hg = rand_host(nw, 1);
    float *x = gpu->alloc((size_t)m * k * sizeof *x), *g = gpu->alloc(nw * sizeof *g);
    float *wm = gpu->alloc(nw * sizeof *wm), *wu = gpu->alloc(nw * sizeof *wu);
    float *mom = gpu->alloc(4 * nw * sizeof *mom);   /* AdamW moments: marked m, v; unmarked m, v */
    gpu->upload(x, hx, (size_t)m * k * sizeof *x);
    gpu->upload(g, hg, nw * sizeof *g);
    gpu->upload(wm, hw, nw * sizeof *wm);
    gpu->upload(wu, hw, nw * sizeof *wu);
    gpu->mark_params(wm, nw);
    same_product("mark_params: x w^T, w marked, is the unmarked product bit for bit", x, wm, wu, m, n, k);
    gpu->upload(wm + 100, hx, 1000 * sizeof *hx), gpu->upload(wu + 100, hx, 1000 * sizeof *hx);
    same_product("mark_params: ... after an upload into the parameters", x, wm, wu, m, n, k);
    gpu->copy(wm + 5000, x + 77, 2000), gpu->copy(wu + 5000, x + 77, 2000);
    same_product("mark_params: ... after a copy into them", x, wm, wu, m, n, k);
    gpu->zero(wm + 7, 300), gpu->zero(wu + 7, 300);
    same_product("mark_params: ... after zeroing part of them", x, wm, wu, m, n, k);
    gpu->scale(wm, 0.5f, nw), gpu->scale(wu, 0.5f, nw);
    same_product("mark_params: ... after scaling them", x, wm, wu, m, n, k);
    for (int part = 0; part < 2; part++) {     /* all of them, then one tensor's worth */
        size_t off = part ? 64 : 0, len = part ? 640 : nw;
        gpu->adamw(wm + off, g + off, 1, mom + off, mom + nw + off, len, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1, 0.2);
        gpu->adamw(wu + off, g + off, 1, mom + 2 * nw + off, mom + 3 * nw + off, len, 1e-2f, 0.9f, 0.95f, 1e-8f,
                   0.1f, 0.1, 0.2);
        same_product(part ? "mark_params: ... after adamw on part of them"
                          : "mark_params: ... after adamw (the copy written beside the weights)",
                     x, wm, wu, m, n, k);
    }
    /* thin products: a decode step's x w^T and a backward's dy w, against the CPU */
    float *hwm = rl_malloc(nw * sizeof *hwm);
    gpu->download(hwm, wm, nw * sizeof *hwm);
    struct two xs = both(hx, (size_t)64 * n), c1 = poisoned((size_t)3 * n), c2 = poisoned((size_t)64 * k);
    cpu->matmul(false, true, 3, n, k, 1.0f, xs.c, k, hwm, k, 0.0f, c1.c, n);
    gpu->matmul(false, true, 3, n, k, 1.0f, xs.g, k, wm, k, 0.0f, c1.g, n);
    expect("mark_params: thin x w^T (a decode step) against the CPU", &c1, gemm_tol);
    cpu->matmul(false, false, 64, k, n, 1.0f, xs.c, n, hwm, k, 0.0f, c2.c, k);
    gpu->matmul(false, false, 64, k, n, 1.0f, xs.g, n, wm, k, 0.0f, c2.g, k);
    expect("mark_params: dy w (the backward's product) against the CPU", &c2, gemm_tol);
    drop(&xs), drop(&c1), drop(&c2);
    gpu->free(wm);                  /* forgotten: memory at that address may be anything else now */
    float *again = gpu->alloc(nw * sizeof *again);
    gpu->upload(again, hg, nw * sizeof *again);
    gpu->upload(wu, hg, nw * sizeof *wu);
    same_product("mark_params: products on memory reused after freeing marked parameters", x, again, wu, m, n, k);
    gpu->free(again), gpu->free(wu), gpu->free(x), gpu->free(g), gpu->free(mom);
    free(hw), free(hx), free(hg), free(hwm);
}

static void test_memory(void)
{
    CHECK("every op of the table is implemented",
        gpu->alloc &&
        gpu->free &&
        gpu->upload &&
        gpu->download &&
        gpu->zero &&
        gpu->copy &&
        gpu->matmul &&
        gpu->matmul_rows &&
        gpu->rmsnorm &&
        gpu->rmsnorm_bwd &&
        gpu->add_rmsnorm &&
        gpu->rope &&
        gpu->attention &&
        gpu->kv_append &&
        gpu->attn_scratch &&
        gpu->attention_bwd &&
        gpu->swiglu &&
        gpu->swiglu_bwd &&
        gpu->gather_rows &&
        gpu->scatter_add_rows &&
        gpu->add &&
        gpu->add_bias &&
        gpu->bias_bwd &&
        gpu->embed &&
        gpu->embed_bwd &&
        gpu->logsoftmax &&
        gpu->logsoftmax_bwd &&
        gpu->sample_rows &&
        gpu->sumsq &&
        gpu->scale &&
        gpu->adamw);
    size_t n = 12345;
    float *h = rand_host(n, 1), *back = rl_malloc(n * sizeof *back);
    float *a = gpu->alloc(n * sizeof *a), *b = gpu->alloc(n * sizeof *b);
    float *z = rl_malloc(n * sizeof *z);
    gpu->download(z, a, n * sizeof *z);
    int zero = 1;
    for (size_t i = 0; i < n; i++)
        zero &= z[i] == 0;
    CHECK("alloc returns zeroed memory", zero);
    gpu->upload(a, h, n * sizeof *h);
    gpu->copy(b, a, n);
    gpu->download(back, b, n * sizeof *back);
    CHECK("upload, copy, download round-trip", !memcmp(back, h, n * sizeof *h));
    gpu->zero(b + 100, 50);
    gpu->download(back, b, n * sizeof *back);
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= (i >= 100 && i < 150) ? back[i] == 0 : back[i] == h[i];
    CHECK("zero touches only its range", ok);
    gpu->free(a), gpu->free(b);
    free(h), free(back), free(z);
}

/* ---- bf16 activations (backend.h act_bf16; $RL_CUDA_ACT) ----
 * The same ops on buffers the GPU knows as activations (a range given to
 * mark_acts), which it keeps as bf16: the CPU computes on fp32 copies of
 * the same bf16 values, and the GPU's outputs are compared once widened.
 * Their bound is the GEMM mode's plus bf16's rounding of the output. */
static char *arena;                     /* one marked range; the tensors are carved from it */
static size_t arena_used, arena_cap;
static float *act_take(size_t n)
{
    size_t bytes = (n * 2 + 63) & ~(size_t)63;
    if (arena_used + bytes > arena_cap) {
        fprintf(stderr, "test_cuda_ops: activation arena too small\n");
        exit(1);
    }
    float *p = (float *)(arena + arena_used);
    arena_used += bytes;
    return p;
}
static void act_upload(float *g, const float *h, size_t n)
{
    uint16_t *b = rl_malloc((n ? n : 1) * sizeof *b);
    for (size_t i = 0; i < n; i++)
        b[i] = st_f32_to_bf16(h[i]);
    gpu->upload(g, b, n * sizeof *b);
    free(b);
}
/* An activation: random bf16 values on both sides (the GPU's in the arena) */
static struct two act_rand(size_t n, float scale)
{
    float *h = rand_host(n, scale);
    bf16_values(h, n);
    struct two t = {cpu->alloc((n ? n : 1) * sizeof(float)), act_take(n), n};
    memcpy(t.c, h, n * sizeof *h);
    act_upload(t.g, h, n);
    free(h);
    return t;
}
/* An activation the op overwrites: zeros on the CPU, NaN on the GPU */
static struct two act_poisoned(size_t n)
{
    float *h = rl_malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    struct two t = {cpu->alloc((n ? n : 1) * sizeof(float)), act_take(n), n};
    act_upload(t.g, h, n);
    free(h);
    return t;
}
static void act_drop(struct two *t) { cpu->free(t->c); }   /* the arena is reset whole */
static void expect_act(const char *name, const struct two *t, double tol)
{
    double e = bf16_err((const uint16_t *)t->g, t->c, t->n);
    CHECKF(name, e <= tol, "normalized error %.3g > %.2g", e, tol);
}
/* The CPU's copy of an output rounded to bf16, as the GPU stores it: where
 * a later op reads it on both sides */
static void act_round_cpu(struct two *t) { bf16_values(t->c, t->n); }

static void test_acts_memory(void)
{
    size_t n = 5003;
    struct two a = rand_both(n, 3), x = act_poisoned(n), back = poisoned(n);
    gpu->copy(x.g, a.g, n);             /* fp32 -> activation: rounded */
    memcpy(x.c, a.c, n * sizeof *a.c);
    act_round_cpu(&x);
    expect_act("bf16 activations: copy from fp32 rounds to bf16", &x, 0);
    gpu->copy(back.g, x.g, n);          /* activation -> fp32: exact */
    memcpy(back.c, x.c, n * sizeof *x.c);
    expect("bf16 activations: copy to fp32 widens exactly", &back, 0);
    struct two y = act_poisoned(n);
    gpu->copy(y.g, x.g, n);
    memcpy(y.c, x.c, n * sizeof *x.c);
    expect_act("bf16 activations: copy between activations", &y, 0);
    gpu->zero((float *)((uint16_t *)y.g + 100), 51);   /* 51 elements: 102 bytes, not 204 */
    for (size_t i = 100; i < 151; i++)
        y.c[i] = 0;
    expect_act("bf16 activations: zero clears its elements, no more", &y, 0);
    drop(&a), drop(&back), act_drop(&x), act_drop(&y);
}

/* Copy n fp32 values (h on the host, src on the GPU) into each of the sets
 * first, first + 2, ... < last; the bf16 values that differ from h's */
static int copies_not_bf16(float **set, int first, int last, const float *src, const float *h, int n)
{
    uint16_t *b16 = rl_malloc((size_t)n * sizeof *b16);
    int bad = 0;
    for (int s = first; s < last; s += 2) {
        gpu->copy(set[s], src, (size_t)n);
        gpu->download(b16, set[s], (size_t)n * sizeof *b16);
        for (int i = 0; i < n; i++)
            bad += b16[i] != st_f32_to_bf16(h[i]);
    }
    free(b16);
    return bad;
}

/* More models than the table once held (16 marked ranges were a fatal
 * error): every range is an activation until it is freed. */
static void test_acts_many_sets(void)
{
    enum { SETS = 40, N = 999 };
    float *set[SETS], *plain = gpu->alloc(N * sizeof *plain);
    for (int s = 0; s < SETS; s++) {
        set[s] = gpu->alloc(N * sizeof(float));
        gpu->mark_acts(set[s], N * sizeof(uint16_t));
    }
    float *h = rand_host(N, 2), *back = rl_malloc(N * sizeof *back);
    float *src = gpu->alloc(N * sizeof *src);
    gpu->upload(src, h, N * sizeof *h);
    /* into an activation: N bf16 values */
    int bad = copies_not_bf16(set, 0, SETS, src, h, N) + copies_not_bf16(set, 1, SETS, src, h, N);
    CHECKF("bf16 activations: 40 marked sets, each one bf16", bad == 0, "%d values differ", bad);
    for (int s = 0; s < SETS; s += 2)             /* forget every other one */
        gpu->free(set[s]);
    gpu->copy(plain, src, N);                      /* never marked: fp32 */
    gpu->download(back, plain, N * sizeof *back);
    CHECK("bf16 activations: an unmarked buffer stays fp32", !memcmp(back, h, N * sizeof *h));
    bad = copies_not_bf16(set, 1, SETS, plain, h, N);
    CHECKF("bf16 activations: the sets left after freeing half stay bf16", bad == 0, "%d values differ", bad);
    for (int s = 1; s < SETS; s += 2)
        gpu->free(set[s]);
    gpu->free(src), gpu->free(plain);
    free(h), free(back);
}

static void test_acts_matmul(void)
{
    double tol = gemm_tol + 1e-2;
    int m = 70, n = 96, k = 128;
    /* a linear layer: activations in, fp32 weights, activations out (fresh, then beta) */
    struct two x = act_rand((size_t)m * k, 1), w = rand_both((size_t)n * k, 1), y = act_poisoned((size_t)m * n);
    cpu->matmul(false, true, m, n, k, 1, x.c, k, w.c, k, 0, y.c, n);
    gpu->matmul(false, true, m, n, k, 1, x.g, k, w.g, k, 0, y.g, n);
    expect_act("bf16 activations: matmul x w^T into activations", &y, tol);
    act_round_cpu(&y);
    cpu->matmul(false, true, m, n, k, 0.5f, x.c, k, w.c, k, 1, y.c, n);
    gpu->matmul(false, true, m, n, k, 0.5f, x.g, k, w.g, k, 1, y.g, n);
    expect_act("bf16 activations: matmul accumulating into activations (beta = 1)", &y, tol);
    /* the weight gradient: activations in, fp32 out, accumulating */
    struct two dy = act_rand((size_t)m * n, 1), dw = rand_both((size_t)n * k, 1);
    cpu->matmul(true, false, n, k, m, 1, dy.c, n, x.c, k, 1, dw.c, k);
    gpu->matmul(true, false, n, k, m, 1, dy.g, n, x.g, k, 1, dw.g, k);
    expect("bf16 activations: matmul dy^T x into an fp32 gradient", &dw, tol);
    /* the LM head's backward: fp32 logits' gradient times fp32 weights into activations */
    struct two g = rand_both((size_t)m * n, 1), dx = act_poisoned((size_t)m * k);
    cpu->matmul(false, false, m, k, n, 1, g.c, n, w.c, k, 0, dx.c, k);
    gpu->matmul(false, false, m, k, n, 1, g.g, n, w.g, k, 0, dx.g, k);
    expect_act("bf16 activations: matmul of fp32 operands into activations", &dx, tol);
    /* and activations into fp32 logits */
    struct two l = poisoned((size_t)m * n);
    cpu->matmul(false, true, m, n, k, 1, x.c, k, w.c, k, 0, l.c, n);
    gpu->matmul(false, true, m, n, k, 1, x.g, k, w.g, k, 0, l.g, n);
    expect("bf16 activations: matmul of activations into fp32", &l, gemm_tol);
    drop(&w), drop(&dw), drop(&g), drop(&l);
    act_drop(&x), act_drop(&y), act_drop(&dy), act_drop(&dx);

    /* matmul_rows (decode steps): activations in, activations or fp32 out;
     * every row the bits of that row alone */
    int rows = 20, nr = 296, kr = 576;
    struct two a = act_rand((size_t)rows * kr, 1), b = rand_both((size_t)nr * kr, 1);
    for (int marked = 0; marked < 2; marked++) {
        if (marked && gpu->mark_params)
            gpu->mark_params(b.g, (size_t)nr * kr);
        struct two c = act_poisoned((size_t)rows * nr), c32 = poisoned((size_t)rows * nr);
        cpu->matmul_rows(c.c, a.c, b.c, rows, nr, kr);
        traced("");
        gpu->matmul_rows(c.g, a.g, b.g, rows, nr, kr);
        if (marked)
            check_streamed("bf16 activations: matmul_rows, the streamed kernel ran");
        expect_act(harness_name("bf16 activations: matmul_rows into activations%s", marked ? ", b marked" : ""), &c,
                   (marked ? gemm_tol : 1e-5) + 1e-2);
        memcpy(c32.c, c.c, (size_t)rows * nr * sizeof *c.c);
        gpu->matmul_rows(c32.g, a.g, b.g, rows, nr, kr);
        expect(harness_name("bf16 activations: matmul_rows into fp32%s", marked ? ", b marked" : ""), &c32,
               marked ? gemm_tol : 1e-5);
        float *all = rl_malloc((size_t)rows * nr * sizeof *all), *one = rl_malloc(nr * sizeof *one);
        gpu->download(all, c32.g, (size_t)rows * nr * sizeof *all);
        bool same = true;
        for (int r = 0; r < rows; r += 7) {
            gpu->matmul_rows(c32.g, (float *)((uint16_t *)a.g + (size_t)r * kr), b.g, 1, nr, kr);
            gpu->download(one, c32.g, nr * sizeof *one);
            same &= !memcmp(one, all + (size_t)r * nr, nr * sizeof *one);
        }
        CHECK(harness_name("bf16 activations: matmul_rows rows are the bits of each row alone%s",
                           marked ? ", b marked" : ""), same);
        free(all), free(one);
        act_drop(&c), drop(&c32);
    }
    act_drop(&a), drop(&b);
}

/* d = 520: four elements at a time; 522: one at a time */
static void test_acts_add_norm(int d)
{
    int n = 37;
    char what[64];
    snprintf(what, sizeof what, "bf16 activations: add_rmsnorm, d=%d", d);
    struct two x = act_rand((size_t)n * d, 3), r = act_rand((size_t)n * d, 3), w = rand_both(d, 1);
    struct two y = act_poisoned((size_t)n * d), rs = poisoned(n);
    float *x2 = act_take((size_t)n * d), *y2 = act_take((size_t)n * d), *rs2 = gpu->alloc(n * sizeof(float));
    check_add_norm(what, &x, &r, &w, &y, &rs, x2, y2, rs2, n, d, true);
    gpu->free(rs2);
    act_drop(&x), act_drop(&r), drop(&w), act_drop(&y), drop(&rs);
}

static void test_acts_rope_kv_append(bool kv16)
{
    struct bk_attn_seq s[RKA_SEQS];
    int row_pos[8 + RKA_SEQS], stride = (RKA_NH + 2 * RKA_NKV) * RKA_HD;
    int rows = rka_seqs(s, row_pos);
    struct two x = act_rand((size_t)rows * stride, 2);
    float *x2 = act_take((size_t)rows * stride);
    check_rope_kv_append(kv16 ? "bf16 activations: rope_kv_append, bf16 caches" : "bf16 activations: rope_kv_append",
                         &x, x2, rows, row_pos, s, true, kv16);
    act_drop(&x);
}

static void test_acts_rows(void)
{
    int n = 37, d = 520;
    double tol = 1e-2;
    struct two x = act_rand((size_t)n * d, 3), w = rand_both(d, 1), y = act_poisoned((size_t)n * d), r = poisoned(n);
    cpu->rmsnorm(y.c, r.c, x.c, w.c, n, d, 1e-5f);
    gpu->rmsnorm(y.g, r.g, x.g, w.g, n, d, 1e-5f);
    expect_act("bf16 activations: rmsnorm", &y, tol);
    expect("bf16 activations: rmsnorm's 1/rms (fp32)", &r, 1e-5);
    struct two dy = act_rand((size_t)n * d, 1), dx = act_rand((size_t)n * d, 1), dw = rand_both(d, 1);
    cpu->rmsnorm_bwd(dx.c, dw.c, dy.c, x.c, w.c, r.c, n, d);
    gpu->rmsnorm_bwd(dx.g, dw.g, dy.g, x.g, w.g, r.g, n, d);
    expect_act("bf16 activations: rmsnorm_bwd dx +=", &dx, tol);
    expect("bf16 activations: rmsnorm_bwd dw += (fp32)", &dw, 1e-5);
    cpu->bias_bwd(dw.c, dy.c, n, d);
    gpu->bias_bwd(dw.g, dy.g, n, d);
    expect("bf16 activations: bias_bwd's column sums into fp32", &dw, 1e-5);
    cpu->add_bias(dx.c, w.c, n, d);
    gpu->add_bias(dx.g, w.g, n, d);
    expect_act("bf16 activations: add_bias", &dx, tol);
    act_round_cpu(&dx);
    cpu->add(dx.c, dy.c, (size_t)n * d);                /* four a thread */
    gpu->add(dx.g, dy.g, (size_t)n * d);
    expect_act("bf16 activations: add", &dx, tol);
    act_round_cpu(&dx);
    cpu->add(dx.c, dy.c, (size_t)n * d - 3);            /* one a thread */
    gpu->add(dx.g, dy.g, (size_t)n * d - 3);
    expect_act("bf16 activations: add, n not a multiple of 4", &dx, tol);
    drop(&w), drop(&r), drop(&dw);
    act_drop(&x), act_drop(&y), act_drop(&dy), act_drop(&dx);

    /* RoPE in place on a q | k row layout */
    int nr = 9, nh = 6, hd = 64, stride = nh * hd + 32, len = 32, half = hd / 2, pos[9];
    for (int i = 0; i < nr; i++)
        pos[i] = (i * 5 + 1) % len;
    int *gpos = ints_gpu(pos, nr);
    struct two cs = rand_both((size_t)len * half, 1), sn = rand_both((size_t)len * half, 1);
    struct two q = act_rand((size_t)nr * stride, 1);
    cpu->rope(q.c, stride, pos, nr, nh, hd, cs.c, sn.c, false);
    gpu->rope(q.g, stride, gpos, nr, nh, hd, cs.g, sn.g, false);
    expect_act("bf16 activations: rope", &q, tol);
    gpu->free(gpos);
    drop(&cs), drop(&sn), act_drop(&q);

    /* SwiGLU, vectorized (f % 4 == 0) and not */
    for (int f = 1028; f >= 1027; f--) {
        struct two gu = act_rand((size_t)n * 2 * f, 4), h = act_poisoned((size_t)n * f);
        cpu->swiglu(h.c, gu.c, n, f);
        gpu->swiglu(h.g, gu.g, n, f);
        expect_act(harness_name("bf16 activations: swiglu, f = %d", f), &h, tol);
        struct two dh = act_rand((size_t)n * f, 1), dgu = act_poisoned((size_t)n * 2 * f);
        cpu->swiglu_bwd(dgu.c, dh.c, gu.c, n, f);
        gpu->swiglu_bwd(dgu.g, dh.g, gu.g, n, f);
        expect_act(harness_name("bf16 activations: swiglu_bwd, f = %d", f), &dgu, tol);
        act_drop(&gu), act_drop(&h), act_drop(&dh), act_drop(&dgu);
    }

    /* the embedding (an fp32 table into activations) and its backward; the
     * LM head's gather and scatter of activation rows */
    int V = 40, ids[10] = {3, 7, 3, 39, 0, 7, 7, 11, 3, 25};
    int *gids = ints_gpu(ids, 10);
    struct two table = rand_both((size_t)V * d, 1), e = act_poisoned((size_t)10 * d);
    cpu->embed(e.c, table.c, ids, 10, d);
    gpu->embed(e.g, table.g, gids, 10, d);
    act_round_cpu(&e);
    expect_act("bf16 activations: embed (the table rounded)", &e, 0);
    struct two de = act_rand((size_t)10 * d, 1);
    cpu->embed_bwd(table.c, de.c, ids, 10, d);
    gpu->embed_bwd(table.g, de.g, gids, 10, d);
    expect("bf16 activations: embed_bwd into the fp32 table", &table, 0);
    struct two g = act_poisoned((size_t)4 * d), dst = act_rand((size_t)10 * d, 1);
    int rows4[4] = {9, 2, 5, 0};
    int *grows = ints_gpu(rows4, 4);
    cpu->gather_rows(g.c, e.c, rows4, 4, d);
    gpu->gather_rows(g.g, e.g, grows, 4, d);
    expect_act("bf16 activations: gather_rows", &g, 0);
    cpu->scatter_add_rows(dst.c, g.c, rows4, 4, d);
    gpu->scatter_add_rows(dst.g, g.g, grows, 4, d);
    expect_act("bf16 activations: scatter_add_rows", &dst, tol);
    gpu->free(gids), gpu->free(grows);
    drop(&table), act_drop(&e), act_drop(&de), act_drop(&g), act_drop(&dst);
}

/* Where the emulation traces launches and the tensor cores (or, for the
 * split decode kernel, that kernel) take the attention: the last call ran
 * `kernel` and converted no activation to fp32 (the other routes' way in);
 * with tc-wide's kernels, which read bf16 operands where they are, it
 * made no head-major copy either */
static void tc_read_acts(const char *what, const char *kernel)
{
    const char *d = gpu->detail ? gpu->detail : "";
    bool tc = strstr(d, "tensor-core+") || strstr(d, "tensor-core (cp.async");
    if (!tc && strncmp(kernel, "attention (split decode)", 24))
        return;
    const char *names[] = {kernel, "bf16 activations (conversion)", "widen a bf16 KV cache", "attention (bf16 copies)"};
    long h[4];
    if (!trace_count(4, names, h))
        return;
    long ran = h[0], conv = h[1] + h[2], copies = h[3];
    bool wide = strstr(d, "tensor-core (cp.async, wide)") && strncmp(kernel, "attention (split decode)", 24);
    CHECKF(what, ran > 0 && conv == 0 && (!wide || copies == 0), "%ld launches of %s, %ld conversions, %ld copies%s",
           ran, kernel, conv, copies, wide ? " (tc-wide: none expected)" : "");
}

/* Training's attention: q, k and v in one activation buffer (the model's
 * qkv rows), the output and the gradients activations too; then
 * generation's kv_append from activation rows into an fp32 and a bf16
 * cache. all_tc: every sequence is one the tensor cores take (head_dim 64
 * or 128, none short), so no conversion may run; else the call mixes
 * routes, the others' fp32 copies spanning rows from the first of theirs. */
enum { ACT_NS = 4 };
static void test_acts_attention(int hd, const int *len, bool all_tc)
{
    enum { NS = ACT_NS };
    int nh = 4, nkv = 2, qd = nh * hd, kvd = nkv * hd, qkv = qd + 2 * kvd;
    int T = 0;
    size_t p_total = 0;
    for (int s = 0; s < NS; s++) {
        T += len[s];
        p_total += (size_t)nh * len[s] * len[s];
    }
    float scale = 1.0f / sqrtf((float)hd);
    struct two x = act_rand((size_t)T * qkv, 2), out = act_poisoned((size_t)T * qd), lse = poisoned((size_t)T * nh);
    struct two p = rand_both(p_total, 1), dp = rand_both(p_total, 1);
    struct bk_attn_seq sc[NS], sg[NS];
    size_t poff = 0;
    for (int s = 0, row = 0; s < NS; row += len[s++]) {
        size_t o = (size_t)row * qkv + qd;
        sc[s] = (struct bk_attn_seq){.row = row, .n = len[s], .kv_stride = qkv, .k = x.c + o, .v = x.c + o + kvd,
                                     .p = p.c + poff, .dp = dp.c + poff, .lse = lse.c + (size_t)row * nh};
        sg[s] = sc[s];
        sg[s].k = (const float *)((uint16_t *)x.g + o);
        sg[s].v = (const float *)((uint16_t *)x.g + o + kvd);
        sg[s].p = p.g + poff, sg[s].dp = dp.g + poff, sg[s].lse = lse.g + (size_t)row * nh;
        poff += (size_t)nh * len[s] * len[s];
    }
    cpu->attention(out.c, qd, x.c, qkv, sc, NS, nh, nkv, hd, scale);
    traced("");
    gpu->attention(out.g, qd, x.g, qkv, sg, NS, nh, nkv, hd, scale);
    const char *how = all_tc ? "" : ", other routes too";
    if (all_tc)
        tc_read_acts(harness_name("bf16 activations: the tensor-core forward reads them as they are (head_dim %d)", hd),
                     "attention (tensor cores");
    double tol = attn_tol + 1e-2;
    expect_act(harness_name("bf16 activations: attention output (head_dim %d%s)", hd, how), &out, tol);
    expect(harness_name("bf16 activations: attention log-sum-exp (head_dim %d%s)", hd, how), &lse, attn_tol);
    act_round_cpu(&out);
    struct two dout = act_rand((size_t)T * qd, 1), dx = act_rand((size_t)T * qkv, 1);
    for (int row = 0; row < T; row++)   /* dk, dv start at zero: what they get is all that is compared */
        for (int c = qd; c < qkv; c++)
            dx.c[(size_t)row * qkv + c] = 0;
    act_upload(dx.g, dx.c, dx.n);
    for (int s = 0, row = 0; s < NS; row += len[s++]) {
        size_t o = (size_t)row * qkv + qd;
        sc[s].dk = dx.c + o, sc[s].dv = dx.c + o + kvd;
        sg[s].dk = (float *)((uint16_t *)dx.g + o), sg[s].dv = (float *)((uint16_t *)dx.g + o + kvd);
    }
    /* dq overwrites the q columns of dx; dk, dv add into theirs */
    cpu->attention_bwd(dx.c, qkv, dout.c, qd, x.c, out.c, qd, sc, NS, nh, nkv, hd, scale);
    traced("");
    gpu->attention_bwd(dx.g, qkv, dout.g, qd, x.g, out.g, qd, sg, NS, nh, nkv, hd, scale);
    /* auto, tc-pipe and tc-wide (the cp.async kernels) and tc take both directions; tc-fwd one */
    const char *d = gpu->detail ? gpu->detail : "", *mode = getenv("RL_CUDA_ATTN");
    bool tc_bwd = strstr(d, "tensor-core (cp.async") || (strstr(d, "tensor-core+") && mode && !strcmp(mode, "tc"));
    if (all_tc && tc_bwd)
        tc_read_acts(harness_name("bf16 activations: the tensor-core backward reads them as they are (head_dim %d)", hd),
                     "attention_bwd (keys, tensor cores");
    expect_act(harness_name("bf16 activations: attention_bwd dq, dk, dv (head_dim %d%s)", hd, how), &dx, tol);

    /* kv_append: the sequences' new rows (activations) into an fp32 cache */
    struct two cache = rand_both((size_t)T * 2 * kvd, 1);
    struct bk_attn_seq kc[NS], kg[NS];
    for (int s = 0, row = 0; s < NS; row += len[s++]) {
        kc[s] = (struct bk_attn_seq){.row = row, .n = len[s], .pos = 0, .kv_stride = 2 * kvd,
                                     .k = cache.c + (size_t)row * 2 * kvd, .v = cache.c + (size_t)row * 2 * kvd + kvd};
        kg[s] = kc[s];
        kg[s].k = cache.g + (size_t)row * 2 * kvd, kg[s].v = cache.g + (size_t)row * 2 * kvd + kvd;
    }
    cpu->kv_append(kc, NS, x.c + qd, x.c + qd + kvd, qkv, kvd);
    gpu->kv_append(kg, NS, (float *)((uint16_t *)x.g + qd), (float *)((uint16_t *)x.g + qd + kvd), qkv, kvd);
    expect(harness_name("bf16 activations: kv_append from activations (head_dim %d%s)", hd, how), &cache, 0);
    /* into a bf16 cache: the activations' values as they are */
    struct two c16 = rand_bf16_both((size_t)T * 2 * kvd);
    uint16_t *c16g = bf16_gpu(&c16);
    for (int s = 0, row = 0; s < NS; row += len[s++]) {
        kc[s].k = c16.c + (size_t)row * 2 * kvd, kc[s].v = c16.c + (size_t)row * 2 * kvd + kvd;
        kg[s].k = (const float *)(c16g + (size_t)row * 2 * kvd);
        kg[s].v = (const float *)(c16g + (size_t)row * 2 * kvd + kvd);
        kg[s].kv_bf16 = true;
    }
    cpu->kv_append(kc, NS, x.c + qd, x.c + qd + kvd, qkv, kvd);
    gpu->kv_append(kg, NS, (float *)((uint16_t *)x.g + qd), (float *)((uint16_t *)x.g + qd + kvd), qkv, kvd);
    double e = bf16_err(c16g, c16.c, c16.n);
    CHECKF(harness_name("bf16 activations: kv_append from activations into a bf16 cache (head_dim %d%s)", hd, how),
           e == 0, "normalized error %.3g", e);
    gpu->free(c16g);
    drop(&lse), drop(&p), drop(&dp), drop(&cache), drop(&c16);
    act_drop(&x), act_drop(&out), act_drop(&dout), act_drop(&dx);
}

/* Decode steps on activations: a few query rows (bf16) over an fp32 or a
 * bf16 KV cache; by default the split decode kernel, which reads and
 * writes activations itself */
static void test_acts_decode(bool kv16)
{
    enum { NS = 3 };
    int hd = 64, nh = 8, nkv = 2, qd = nh * hd, kvs = 2 * nkv * hd, len[NS] = {1, 3, 1}, pos[NS] = {40, 100, 7};
    int T = 0, keys = 0;
    for (int s = 0; s < NS; s++)
        T += len[s], keys += pos[s] + len[s];
    struct two q = act_rand((size_t)T * qd, 2), out = act_poisoned((size_t)T * qd), lse = poisoned((size_t)T * nh);
    struct two kv = rand_bf16_both((size_t)keys * kvs);
    uint16_t *kv16g = kv16 ? bf16_gpu(&kv) : NULL;
    size_t p_total = 0;
    for (int s = 0; s < NS; s++)
        p_total += (size_t)nh * len[s] * (pos[s] + len[s]);
    struct two p = rand_both(p_total, 1);
    struct bk_attn_seq sc[NS], sg[NS];
    size_t poff = 0;
    for (int s = 0, row = 0, key = 0; s < NS; row += len[s], key += pos[s] + len[s], s++) {
        size_t o = (size_t)key * kvs;
        sc[s] = (struct bk_attn_seq){.row = row, .n = len[s], .pos = pos[s], .kv_stride = kvs, .k = kv.c + o,
                                     .v = kv.c + o + nkv * hd, .p = p.c + poff, .lse = lse.c + (size_t)row * nh};
        sg[s] = sc[s];
        sg[s].k = kv16 ? (const float *)(kv16g + o) : kv.g + o;
        sg[s].v = kv16 ? (const float *)(kv16g + o + nkv * hd) : kv.g + o + nkv * hd;
        sg[s].kv_bf16 = kv16;
        sg[s].p = p.g + poff, sg[s].lse = lse.g + (size_t)row * nh;
        poff += (size_t)nh * len[s] * (pos[s] + len[s]);
    }
    float scale = 1.0f / sqrtf((float)hd);
    cpu->attention(out.c, qd, q.c, qd, sc, NS, nh, nkv, hd, scale);
    traced("");
    gpu->attention(out.g, qd, q.g, qd, sg, NS, nh, nkv, hd, scale);
    const char *kvn = kv16 ? "bf16" : "fp32";
    if (gpu->detail && strstr(gpu->detail, "split decode"))
        tc_read_acts(harness_name("bf16 activations: the split decode kernel reads them as they are (%s cache)", kvn),
                     "attention (split decode)");
    expect_act(harness_name("bf16 activations: decode steps' attention (%s cache)", kvn), &out, attn_tol + 1e-2);
    expect(harness_name("bf16 activations: decode steps' log-sum-exp (%s cache)", kvn), &lse, attn_tol + 1e-5);
    if (kv16)
        gpu->free(kv16g);
    drop(&lse), drop(&kv), drop(&p), act_drop(&q), act_drop(&out);
}

static void test_acts(void)
{
    if (!gpu->act_bf16) {
        harness_skip("bf16 activations", "the backend stores activations as fp32 (RL_CUDA_ACT, the GEMM mode)");
        return;
    }
    arena_cap = (size_t)16 << 20;
    arena = gpu->alloc(arena_cap);
    gpu->mark_acts(arena, arena_cap);
    test_acts_memory();
    test_acts_many_sets();
    arena_used = 0;
    test_acts_matmul();
    arena_used = 0;
    test_acts_rows();
    arena_used = 0;
    test_acts_add_norm(520);
    arena_used = 0;
    test_acts_add_norm(522);
    arena_used = 0;
    test_acts_rope_kv_append(false);
    arena_used = 0;
    test_acts_rope_kv_append(true);
    arena_used = 0;
    const struct rows_swiglu_bufs act_bufs = {act_rand, act_poisoned, act_take, act_drop, true};
    test_rows_swiglu(&act_bufs);
    arena_used = 0;
    /* the tensor cores' lengths (a multiple of no tile among them), then
     * short sequences between and after them, then a head_dim no tensor
     * core kernel takes */
    static const int tc_len[ACT_NS] = {17, 70, 9, 33}, mixed[ACT_NS] = {17, 3, 70, 1};
    test_acts_attention(64, tc_len, true);
    arena_used = 0;
    test_acts_attention(128, tc_len, true);
    arena_used = 0;
    test_acts_attention(64, mixed, false);
    arena_used = 0;
    test_acts_attention(32, tc_len, false);
    arena_used = 0;
    test_acts_decode(false);
    arena_used = 0;
    test_acts_decode(true);
    gpu->free(arena);
}

int main(void)
{
    /* RL_TEST_GPU=devsim runs the suite's own logic on the CPU (tests/run) */
    const char *dev = getenv("RL_TEST_GPU");
    static char trace[] = "/tmp/rlflow-emu-trace.XXXXXX";
    int fd = mkstemp(trace);
    if (fd >= 0) {                                /* read by the emulation at its first launch */
        close(fd);
        setenv("RL_EMU_TRACE", trace, 1);
        trace_path = trace;
    }
    gpu = backend_get(dev && *dev ? dev : "cuda");
    if (!gpu) {
        harness_skip("CUDA backend ops against the CPU backend", rl_errmsg());
        return 0;
    }
    const char *seed_env = getenv("RL_TEST_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    rng_seed(&R, seed);
    const char *d = gpu->detail ? gpu->detail : "";
    gemm_tol = strstr(d, "fp32 GEMMs") ? 1e-5 : strstr(d, "tf32 GEMMs") ? 2e-3 : 1e-2;
    bf16_mode = strstr(d, "bf16 GEMMs") != NULL;
    /* attention's products go through cuBLAS (in the GEMM mode) unless the
     * backend runs its fp32 kernels only */
    attn_tol = strstr(d, "cuBLAS") ? gemm_tol : 1e-5;
    fprintf(stderr, "test_cuda_ops: %s; seed %llu (RL_TEST_SEED replays it)\n", d, (unsigned long long)seed);
    test_memory();
    test_matmul();
    test_matmul_invariant();
    test_operand_reuse();
    test_params();
    test_producer_copies();
    test_saved_copies();
    test_matmul_rows(577, false);
    test_matmul_rows(576, false);
    test_matmul_rows(576, true);
    test_matmul_rows(2048, true);
    const struct rows_swiglu_bufs fp32_bufs = {rand_both, poisoned, gpu_floats, drop, false};
    test_rows_swiglu(&fp32_bufs);
    test_norms(33, 1000);
    test_norms(300, 1000);
    test_norms(33, 1001);
    test_add_norm(33, 1000, 0);
    test_add_norm(300, 1000, 0);
    test_add_norm(33, 1001, 0);
    test_add_norm(33, 1000, 1);
    test_rope();
    test_rope_kv_append(false);
    test_attention(64, false);
    test_attention(128, false);
    test_decodes();
    if (!strcmp(gpu->name, "cuda")) {       /* the CPU (devsim) holds no bf16 cache */
        test_attention(64, true);
        test_attention(128, true);
        test_kv_append_bf16();
        test_rope_kv_append(true);
    }
    test_elementwise();
    test_vocab();
    test_sample_rows();
    test_sample_warped();
    test_adamw();
    test_acts();
    if (trace_path)
        unlink(trace_path);
    return harness_exit();
}
