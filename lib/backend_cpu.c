/* The CPU backend: OpenBLAS sgemm for every matmul, OpenMP loops for the
 * rest. Reductions that feed a normalisation (RMS, softmax sums) accumulate in
 * double: it costs nothing measurable here and keeps results independent of
 * how a row is split. No op allocates. */
#include <cblas.h>
#include <math.h>
#ifdef __FMA__
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "err.h"
#include "sample.h"

/* Elementwise work below this many elements runs on the calling thread: a
 * parallel region costs more than it saves (decode steps, per-row ops). */
#define PAR(work) ((work) >= 32768)

static void *cpu_alloc(size_t bytes)
{
    /* 64-byte aligned for the vector units; zeroed like calloc */
    void *p = NULL;
    size_t n = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, n ? n : 64))
        return NULL;
    memset(p, 0, n);
    return p;
}

static void cpu_free(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { if (bytes) memcpy(dst, src, bytes); }
static void cpu_zero(float *x, size_t n) { if (n) memset(x, 0, n * sizeof *x); }
static void cpu_copyf(float *dst, const float *src, size_t n) { if (n) memcpy(dst, src, n * sizeof *dst); }

/* One thread pool, not two: OpenBLAS runs single-threaded inside OpenMP
 * threads that split the output columns. With OpenBLAS's own pthreads next to
 * OpenMP's, each pool spin-waits while the other works, and on two cores the
 * many short ops of a backward or a decode step ran several times slower.
 * The split depends on n and the thread count only, never on m, so a row's
 * result does not depend on the other rows' count beyond what sgemm does. */
void openblas_set_num_threads(int);
int openblas_get_parallel(void);   /* 0 sequential, 1 pthreads, 2 OpenMP */
/* Only OpenBLAS's pthread build has a pool of its own to silence. Its OpenMP
 * build (the one the Makefile links) shares our OpenMP threads and runs
 * single-threaded inside a parallel region by itself; there, setting its
 * thread count would set OpenMP's for the whole process. */
__attribute__((constructor)) static void cpu_blas_single_thread(void)
{
    if (openblas_get_parallel() == 1)
        openblas_set_num_threads(1);
}

static void cpu_matmul(bool ta, bool tb, int m, int n, int k, float alpha,
                       const float *a, int lda, const float *b, int ldb,
                       float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    int nt = omp_get_max_threads();
    if (nt <= 1 || (double)m * n * k < 2e5 || n < 32 || omp_in_parallel()) {
        cblas_sgemm(CblasRowMajor, TA, TB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    /* column blocks of at least 128 columns (multiples of 16), 1 to 4 per
     * thread and the same number for every thread, handed out dynamically:
     * when another process takes a core for a while, the thread still
     * running picks up the remaining blocks */
    int per_thread = n / (128 * nt);
    per_thread = per_thread < 1 ? 1 : per_thread > 4 ? 4 : per_thread;
    int nb = nt * per_thread;
    int per = ((n + nb - 1) / nb + 15) & ~15;
    nb = (n + per - 1) / per;
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < nb; t++) {
        int j0 = t * per, j1 = j0 + per < n ? j0 + per : n;
        const float *bj = tb ? b + (size_t)j0 * ldb : b + j0;
        cblas_sgemm(CblasRowMajor, TA, TB, m, j1 - j0, k, alpha, a, lda, bj, ldb, beta, c + j0, ldc);
    }
}

/* matmul_rows: c[i][j] = dot(a row i, b row j), every dot product computed in
 * one order fixed by k alone, never by m, the tile it falls in, or the thread:
 * 8 lanes over the first k - k%8 terms (one fused multiply-add per lane and
 * chunk, in k order), the lanes summed in a fixed tree, then the tail terms in
 * order. So a row's results are the same bits whatever other rows share the
 * call (batch-invariant decoding), while 3x4 register tiles reuse each load. */
typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v8 madd8(v8 acc, v8 a, v8 b)
{
#ifdef __FMA__
    return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)acc);
#else
    return acc + a * b;
#endif
}

static inline float finish_dot(v8 acc, const float *a, const float *b, int k8, int k)
{
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (int t = k8; t < k; t++)
        s = fmaf(a[t], b[t], s);
    return s;
}

/* A tile of MI rows of a by NJ rows of b (MI <= 3, NJ <= 4). */
static inline void tile(float *c, int n, const float *a, const float *b, int k, int i0, int j0, int MI, int NJ)
{
    int k8 = k & ~7;
    v8 acc[3][4] = {{{0}}};
    const float *ar[3], *br[4];
    for (int i = 0; i < MI; i++) ar[i] = a + (size_t)(i0 + i) * k;
    for (int j = 0; j < NJ; j++) br[j] = b + (size_t)(j0 + j) * k;
    if (MI == 3 && NJ == 4) {          /* the hot path: 12 accumulators in registers */
        v8 c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0},
           c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0};
        for (int t = 0; t < k8; t += 8) {
            v8 b0 = load8(br[0] + t), b1 = load8(br[1] + t), b2 = load8(br[2] + t), b3 = load8(br[3] + t);
            v8 x = load8(ar[0] + t);
            c00 = madd8(c00, x, b0); c01 = madd8(c01, x, b1); c02 = madd8(c02, x, b2); c03 = madd8(c03, x, b3);
            x = load8(ar[1] + t);
            c10 = madd8(c10, x, b0); c11 = madd8(c11, x, b1); c12 = madd8(c12, x, b2); c13 = madd8(c13, x, b3);
            x = load8(ar[2] + t);
            c20 = madd8(c20, x, b0); c21 = madd8(c21, x, b1); c22 = madd8(c22, x, b2); c23 = madd8(c23, x, b3);
        }
        acc[0][0] = c00; acc[0][1] = c01; acc[0][2] = c02; acc[0][3] = c03;
        acc[1][0] = c10; acc[1][1] = c11; acc[1][2] = c12; acc[1][3] = c13;
        acc[2][0] = c20; acc[2][1] = c21; acc[2][2] = c22; acc[2][3] = c23;
    } else if (NJ == 4) {              /* 1 or 2 rows (a decode step of one or two sequences) */
        v8 c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0};
        for (int t = 0; t < k8; t += 8) {
            v8 b0 = load8(br[0] + t), b1 = load8(br[1] + t), b2 = load8(br[2] + t), b3 = load8(br[3] + t);
            v8 x = load8(ar[0] + t);
            c00 = madd8(c00, x, b0); c01 = madd8(c01, x, b1); c02 = madd8(c02, x, b2); c03 = madd8(c03, x, b3);
            if (MI == 2) {
                x = load8(ar[1] + t);
                c10 = madd8(c10, x, b0); c11 = madd8(c11, x, b1); c12 = madd8(c12, x, b2); c13 = madd8(c13, x, b3);
            }
        }
        acc[0][0] = c00; acc[0][1] = c01; acc[0][2] = c02; acc[0][3] = c03;
        acc[1][0] = c10; acc[1][1] = c11; acc[1][2] = c12; acc[1][3] = c13;
    } else {                           /* the last, partial column block */
        for (int t = 0; t < k8; t += 8)
            for (int i = 0; i < MI; i++) {
                v8 x = load8(ar[i] + t);
                for (int j = 0; j < NJ; j++)
                    acc[i][j] = madd8(acc[i][j], x, load8(br[j] + t));
            }
    }
    for (int i = 0; i < MI; i++)
        for (int j = 0; j < NJ; j++)
            c[(size_t)(i0 + i) * n + j0 + j] = finish_dot(acc[i][j], ar[i], br[j], k8, k);
}

/* One row against 8 columns: 8 independent chains keep both FMA units busy
 * where a 1x4 tile would wait on each FMA's latency. Same per-element order. */
static inline void row_x8(float *c, const float *a, const float *b, int k, int j0)
{
    int k8 = k & ~7;
    const float *br[8];
    for (int j = 0; j < 8; j++) br[j] = b + (size_t)(j0 + j) * k;
    v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, c6 = {0}, c7 = {0};
    for (int t = 0; t < k8; t += 8) {
        v8 x = load8(a + t);
        c0 = madd8(c0, x, load8(br[0] + t)); c1 = madd8(c1, x, load8(br[1] + t));
        c2 = madd8(c2, x, load8(br[2] + t)); c3 = madd8(c3, x, load8(br[3] + t));
        c4 = madd8(c4, x, load8(br[4] + t)); c5 = madd8(c5, x, load8(br[5] + t));
        c6 = madd8(c6, x, load8(br[6] + t)); c7 = madd8(c7, x, load8(br[7] + t));
    }
    v8 acc[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
    for (int j = 0; j < 8; j++)
        c[j0 + j] = finish_dot(acc[j], a, br[j], k8, k);
}

static void cpu_matmul_rows(float *c, const float *a, const float *b, int m, int n, int k)
{
    if (m == 1) {
        int n8 = n & ~7;
#pragma omp parallel for schedule(static) if (PAR((size_t)n * k))
        for (int j0 = 0; j0 < n8; j0 += 8)
            row_x8(c, a, b, k, j0);
        for (int j0 = n8; j0 < n; j0 += 4)
            tile(c, n, a, b, k, 0, j0, 1, n - j0 < 4 ? n - j0 : 4);
        return;
    }
    /* threads split the columns (b rows); each b tile stays in cache for all m rows */
    int nblk = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (PAR((size_t)n * k))
    for (int jb = 0; jb < nblk; jb++) {
        int j0 = jb * 4, nj = n - j0 < 4 ? n - j0 : 4;
        for (int i0 = 0; i0 < m; i0 += 3)
            tile(c, n, a, b, k, i0, j0, m - i0 < 3 ? m - i0 : 3, nj);
    }
}

/* One row of RMSNorm: returns 1/rms */
static float rmsnorm_row(float *y, const float *x, const float *w, int d, float eps)
{
    double ss = 0;
    for (int j = 0; j < d; j++)
        ss += (double)x[j] * x[j];
    float r = (float)(1.0 / sqrt(ss / d + eps));
    for (int j = 0; j < d; j++)
        y[j] = w[j] * (x[j] * r);
    return r;
}

static void cpu_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int i = 0; i < n; i++)
        rstd[i] = rmsnorm_row(y + (size_t)i * d, x + (size_t)i * d, w, d, eps);
}

static void cpu_add_rmsnorm(float *y, float *rstd, float *x, const float *r, const float *w, int n, int d,
                            float eps)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d;
        const float *ri = r + (size_t)i * d;
        for (int j = 0; j < d; j++)
            xi[j] += ri[j];
        rstd[i] = rmsnorm_row(y + (size_t)i * d, xi, w, d, eps);
    }
}

/* y = w * x * r with r = (mean(x^2)+eps)^-1/2:
 * dx = r * (w*dy) - x * r^3 / d * sum(w*dy*x);  dw = sum_rows dy * x * r */
static void cpu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x,
                            const float *w, const float *rstd, int n, int d)
{
#pragma omp parallel if (PAR((size_t)n * d))
    {
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * d, *dyi = dy + (size_t)i * d;
            float *dxi = dx + (size_t)i * d;
            double dot = 0;
            for (int j = 0; j < d; j++)
                dot += (double)w[j] * dyi[j] * xi[j];
            float r = rstd[i];
            float c = (float)(dot * r * r * r / d);
            for (int j = 0; j < d; j++)
                dxi[j] += r * w[j] * dyi[j] - xi[j] * c;
        }
        /* the weight gradient reduces over rows: split the columns instead */
#pragma omp for schedule(static)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int i = 0; i < n; i++)
                s += (double)dy[(size_t)i * d + j] * x[(size_t)i * d + j] * rstd[i];
            dw[j] += (float)s;
        }
    }
}

/* One row's n_heads heads at position p */
static void rope_row(float *x, int p, int n_heads, int head_dim, const float *cos_t, const float *sin_t, float sgn)
{
    int half = head_dim / 2;
    const float *c = cos_t + (size_t)p * half, *s = sin_t + (size_t)p * half;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int j = 0; j < half; j++) {
            float a = v[j], b = v[j + half], sj = sgn * s[j];
            v[j] = a * c[j] - b * sj;
            v[j + half] = b * c[j] + a * sj;
        }
    }
}

static void cpu_rope(float *x, int stride, const int *pos, int n, int n_heads, int head_dim,
                     const float *cos_t, const float *sin_t, bool inverse)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * n_heads * head_dim))
    for (int i = 0; i < n; i++)
        rope_row(x + (size_t)i * stride, pos[i], n_heads, head_dim, cos_t, sin_t, inverse ? -1.0f : 1.0f);
}

/* Attention with sgemm: per (sequence, head) the scores S = q k^T for all
 * n x ctx pairs (the causal upper triangle is computed and discarded: sgemm
 * on the square beats loops on the triangle), a masked softmax row by row,
 * then out = P v. Each task calls a single-threaded sgemm; tasks are spread
 * over the OpenMP threads. */
static void softmax_causal(float *p, float *lse, int n, int ctx, int pos)
{
    for (int i = 0; i < n; i++) {
        float *r = p + (size_t)i * ctx;
        int len = pos + i + 1;
        float mx = -INFINITY;
        for (int j = 0; j < len; j++)
            if (r[j] > mx)
                mx = r[j];
        double sum = 0;
        for (int j = 0; j < len; j++) {
            r[j] = expf(r[j] - mx);
            sum += r[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < len; j++)
            r[j] *= inv;
        for (int j = len; j < ctx; j++)
            r[j] = 0;
        if (lse)
            lse[i] = mx + (float)log(sum);
    }
}

/* P = exp(S - lse) on the causal part, 0 above it (the backward's recompute) */
static void softmax_from_lse(float *p, const float *lse, int n, int ctx, int pos)
{
    for (int i = 0; i < n; i++) {
        float *r = p + (size_t)i * ctx;
        int len = pos + i + 1;
        for (int j = 0; j < len; j++)
            r[j] = expf(r[j] - lse[i]);
        for (int j = len; j < ctx; j++)
            r[j] = 0;
    }
}

/* The CPU's caches are fp32 (backend_cpu.kv_bf16 is false): a bf16 one here
 * is the caller's bug, and reading its bits as floats would be silent garbage. */
static void fp32_kv_only(const struct bk_attn_seq *s, int n_seq)
{
    for (int i = 0; i < n_seq; i++)
        if (s[i].kv_bf16)
            rl_die("the CPU backend was given a bf16 KV cache (sequence %d of %d)", i, n_seq);
}

static void cpu_attention(float *out, int out_stride, const float *q, int q_stride,
                          const struct bk_attn_seq *s, int n_seq,
                          int n_heads, int n_kv, int head_dim, float scale)
{
    fp32_kv_only(s, n_seq);
    int tasks = n_seq * n_heads, group = n_heads / n_kv;
    size_t work = 0;
    for (int i = 0; i < n_seq; i++)
        work += (size_t)s[i].n * (s[i].pos + s[i].n) * head_dim * n_heads;
#pragma omp parallel for schedule(dynamic, 1) if (PAR(work / 4))
    for (int t = 0; t < tasks; t++) {
        const struct bk_attn_seq *sq = &s[t / n_heads];
        int h = t % n_heads, g = h / group, ctx = sq->pos + sq->n;
        float *p = sq->p + (size_t)h * sq->n * ctx;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sq->n, ctx, head_dim, scale,
                    q + (size_t)sq->row * q_stride + (size_t)h * head_dim, q_stride,
                    sq->k + (size_t)g * head_dim, sq->kv_stride, 0.0f, p, ctx);
        softmax_causal(p, sq->lse ? sq->lse + (size_t)h * sq->n : NULL, sq->n, ctx, sq->pos);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sq->n, head_dim, ctx, 1.0f, p, ctx,
                    sq->v + (size_t)g * head_dim, sq->kv_stride, 0.0f,
                    out + (size_t)sq->row * out_stride + (size_t)h * head_dim, out_stride);
    }
}

/* Backward of one (sequence, kv head) group; the group's query heads share
 * dk/dv, so one task owns them and no two threads write the same rows.
 * P is recomputed from q, k and the saved log-sum-exps (one more sgemm;
 * keeping every layer's n x n probabilities would cost more memory than all
 * other activations together for long sequences).
 * dv += P^T dO; dP = dO v^T; dS = P (dP - rowsum(P dP)) scale;
 * dq = dS k; dk += dS^T q. dP and dS live in s->dp (laid out like s->p). */
static void attn_bwd_group(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                           const struct bk_attn_seq *s, int g, int n_heads, int n_kv, int hd, float scale)
{
    int group = n_heads / n_kv, n = s->n, ctx = s->pos + s->n, kv_stride = s->kv_stride;
    const float *kg = s->k + (size_t)g * hd, *vg = s->v + (size_t)g * hd;
    float *dkg = s->dk + (size_t)g * hd, *dvg = s->dv + (size_t)g * hd;
    for (int h = g * group; h < (g + 1) * group; h++) {
        size_t rq = (size_t)s->row * q_stride + (size_t)h * hd, ro = (size_t)s->row * dout_stride + (size_t)h * hd;
        float *p = s->p + (size_t)h * n * ctx, *dp = s->dp + (size_t)h * n * ctx;
        /* the probabilities again, from q, k and the forward's log-sum-exps */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ctx, hd, scale, q + rq, q_stride, kg, kv_stride,
                    0.0f, p, ctx);
        softmax_from_lse(p, s->lse + (size_t)h * n, n, ctx, s->pos);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ctx, hd, n, 1.0f, p, ctx, dout + ro, dout_stride,
                    1.0f, dvg, kv_stride);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ctx, hd, 1.0f, dout + ro, dout_stride, vg,
                    kv_stride, 0.0f, dp, ctx);
        for (int i = 0; i < n; i++) {
            const float *pi = p + (size_t)i * ctx;
            float *di = dp + (size_t)i * ctx;
            int len = s->pos + i + 1;
            double acc = 0;
            for (int j = 0; j < len; j++)
                acc += (double)pi[j] * di[j];
            float rowdot = (float)acc;
            for (int j = 0; j < len; j++)
                di[j] = pi[j] * (di[j] - rowdot) * scale;
            for (int j = len; j < ctx; j++)
                di[j] = 0;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, ctx, 1.0f, dp, ctx, kg, kv_stride,
                    0.0f, dq + rq, q_stride);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ctx, hd, n, 1.0f, dp, ctx, q + rq, q_stride,
                    1.0f, dkg, kv_stride);
    }
}

/* out is not needed here: rowsum(P dP) comes from the recomputed P */
static void cpu_attention_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                              const float *out, int out_stride, const struct bk_attn_seq *s, int n_seq,
                              int n_heads, int n_kv, int head_dim, float scale)
{
    (void)out, (void)out_stride;
    int tasks = n_seq * n_kv;
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < tasks; t++)
        attn_bwd_group(dq, q_stride, dout, dout_stride, q, &s[t / n_kv], t % n_kv, n_heads, n_kv, head_dim, scale);
}

static bool cpu_attn_scratch(int n, int ctx, int n_heads, int head_dim, bool backward)
{
    (void)n, (void)ctx, (void)n_heads, (void)head_dim, (void)backward;
    return true;                       /* the scores go through sgemm */
}

static void cpu_kv_append(const struct bk_attn_seq *s, int n_seq, const float *k_src, const float *v_src,
                          int src_stride, int kv_dim)
{
    fp32_kv_only(s, n_seq);
    for (int q = 0; q < n_seq; q++)
        for (int i = 0; i < s[q].n; i++) {
            size_t dst = (size_t)(s[q].pos + i) * s[q].kv_stride, src = (size_t)(s[q].row + i) * src_stride;
            memcpy((float *)s[q].k + dst, k_src + src, kv_dim * sizeof(float));
            memcpy((float *)s[q].v + dst, v_src + src, kv_dim * sizeof(float));
        }
}

static void cpu_rope_kv_append(float *qkv, int stride, const int *pos, int n_heads, int n_kv, int head_dim,
                               const float *cos_t, const float *sin_t, const struct bk_attn_seq *s, int n_seq)
{
    size_t rows = 0;
    for (int q = 0; q < n_seq; q++)
        rows += (size_t)s[q].n;
    /* the sequences' rows in one parallel loop (a decode step: a row each) */
#pragma omp parallel for schedule(static) if (PAR(rows * (n_heads + n_kv) * head_dim))
    for (int q = 0; q < n_seq; q++)
        for (int r = s[q].row; r < s[q].row + s[q].n; r++)
            rope_row(qkv + (size_t)r * stride, pos[r], n_heads + n_kv, head_dim, cos_t, sin_t, 1.0f);
    int kv_dim = n_kv * head_dim;
    cpu_kv_append(s, n_seq, qkv + (size_t)n_heads * head_dim, qkv + (size_t)n_heads * head_dim + kv_dim, stride,
                  kv_dim);
}

static void cpu_swiglu(float *h, const float *gu, int n, int f)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * f))
    for (int i = 0; i < n; i++) {
        const float *g = gu + (size_t)i * 2 * f, *u = g + f;
        float *hi = h + (size_t)i * f;
        for (int j = 0; j < f; j++)
            hi[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    }
}

static void cpu_matmul_rows_swiglu(float *h, float *gu, const float *a, const float *b, int m, int f, int k)
{
    cpu_matmul_rows(gu, a, b, m, 2 * f, k);
    cpu_swiglu(h, gu, m, f);
}

/* silu(g) = g*sig(g); silu'(g) = sig(g) * (1 + g*(1-sig(g))) */
static void cpu_swiglu_bwd(float *dgu, const float *dh, const float *gu, int n, int f)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * f))
    for (int i = 0; i < n; i++) {
        const float *g = gu + (size_t)i * 2 * f, *u = g + f, *d = dh + (size_t)i * f;
        float *dg = dgu + (size_t)i * 2 * f, *du = dg + f;
        for (int j = 0; j < f; j++) {
            float sg = 1.0f / (1.0f + expf(-g[j]));
            du[j] = d[j] * g[j] * sg;
            dg[j] = d[j] * u[j] * sg * (1.0f + g[j] * (1.0f - sg));
        }
    }
}

static void cpu_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    for (int k = 0; k < n; k++)
        memcpy(dst + (size_t)k * d, src + (size_t)idx[k] * d, d * sizeof *dst);
}

static void cpu_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int k = 0; k < n; k++) {
        float *y = dst + (size_t)idx[k] * d;
        const float *x = src + (size_t)k * d;
        for (int j = 0; j < d; j++)
            y[j] += x[j];
    }
}

static void cpu_add(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static) if (PAR(n))
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void cpu_add_bias(float *y, const float *b, int n, int d)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            y[(size_t)i * d + j] += b[j];
}

static void cpu_bias_bwd(float *db, const float *dy, int n, int d)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int j = 0; j < d; j++) {
        double s = 0;
        for (int i = 0; i < n; i++)
            s += dy[(size_t)i * d + j];
        db[j] += (float)s;
    }
}

static void cpu_embed(float *x, const float *table, const int *ids, int n, int d)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int i = 0; i < n; i++)
        memcpy(x + (size_t)i * d, table + (size_t)ids[i] * d, d * sizeof *x);
}

static void cpu_embed_bwd(float *dtable, const float *dx, const int *ids, int n, int d)
{
    /* a token may repeat: rows are summed in order, columns split across threads */
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int j0 = 0; j0 < d; j0 += 64) {
        int j1 = j0 + 64 < d ? j0 + 64 : d;
        for (int i = 0; i < n; i++)
            for (int j = j0; j < j1; j++)
                dtable[(size_t)ids[i] * d + j] += dx[(size_t)i * d + j];
    }
}

static float row_lse(const float *x, int v)
{
    float mx = -INFINITY;
    for (int j = 0; j < v; j++)
        if (x[j] > mx)
            mx = x[j];
    double s = 0;
    for (int j = 0; j < v; j++)
        s += expf(x[j] - mx);
    return mx + (float)log(s);
}

static void cpu_logsoftmax(float *lse, float *logp, const float *logits, const int *targets, int n, int v)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * v))
    for (int i = 0; i < n; i++) {
        const float *x = logits + (size_t)i * v;
        lse[i] = row_lse(x, v);
        if (logp)
            logp[i] = targets && targets[i] >= 0 ? x[targets[i]] - lse[i] : 0.0f;
    }
}

static void cpu_logsoftmax_bwd(float *logits, const float *lse, const int *targets, const float *g, int n, int v)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * v))
    for (int i = 0; i < n; i++) {
        float *x = logits + (size_t)i * v;
        if (targets[i] < 0 || g[i] == 0) {
            memset(x, 0, v * sizeof *x);
            continue;
        }
        float gi = g[i], l = lse[i];
        for (int j = 0; j < v; j++)
            x[j] = -gi * expf(x[j] - l);
        x[targets[i]] += gi;
    }
}

/* The warpers' scratch, one per thread: the backend's own, grown on demand
 * like the CUDA backend's workspaces, so that a decode step allocates
 * nothing. */
static struct sample_scratch *warp_scratch(int threads, int v)
{
    static struct sample_scratch *s;
    static int n;
    if (n < threads || s[0].V < v) {
        int keep_v = n > 0 && s[0].V > v ? s[0].V : v;
        for (int i = 0; i < n; i++)
            sample_scratch_free(&s[i]);
        free(s);
        n = threads > n ? threads : n;
        s = rl_calloc((size_t)n, sizeof *s);
        for (int i = 0; i < n; i++)
            sample_scratch_init(&s[i], keep_v);
    }
    return s;
}

static void cpu_sample_rows(int *tok, double *logp1, const float *logits, const double *u, int n, int v,
                            const struct sampler *c)
{
    int threads = n > 1 ? omp_get_max_threads() : 1;
    struct sample_scratch *s = c->temperature > 0 && !sampler_plain(c) ? warp_scratch(threads, v) : NULL;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (n > 1)
    for (int i = 0; i < n; i++)
        tok[i] = sample_draw(c, logits + (size_t)i * v, v, u[i], s ? &s[omp_get_thread_num()] : NULL, &logp1[i]);
}

static double cpu_sumsq(const float *x, size_t n)
{
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (PAR(n))
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

static void cpu_scale(float *x, float a, size_t n)
{
#pragma omp parallel for schedule(static) if (PAR(n))
    for (size_t i = 0; i < n; i++)
        x[i] *= a;
}

static void cpu_adamw(float *w, const float *g, float gscale, float *m, float *v, size_t n,
                      float lr, float beta1, float beta2, float eps, float wd,
                      double bc1, double bc2_sqrt)
{
    /* the scalars are formed in double and rounded once, as torch does with
     * Python floats applied to fp32 tensors */
    float decay = (float)(1.0 - (double)lr * wd);
    float step = (float)(lr / bc1), bc2s = (float)bc2_sqrt;
    float omb1 = (float)(1.0 - (double)beta1), omb2 = (float)(1.0 - (double)beta2);
#pragma omp parallel for schedule(static) if (PAR(n))
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        w[i] *= decay;
        m[i] = m[i] * beta1 + gi * omb1;
        v[i] = v[i] * beta2 + omb2 * gi * gi;
        float denom = sqrtf(v[i]) / bc2s + eps;
        w[i] -= step * (m[i] / denom);
    }
}

const struct backend backend_cpu = {
    .name = "cpu",
    .host = true,
    .head_chunk_mb = 64,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .copy = cpu_copyf,
    .matmul = cpu_matmul,
    .matmul_rows = cpu_matmul_rows,
    .rmsnorm = cpu_rmsnorm,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .add_rmsnorm = cpu_add_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .attention_bwd = cpu_attention_bwd,
    .kv_append = cpu_kv_append,
    .rope_kv_append = cpu_rope_kv_append,
    .attn_scratch = cpu_attn_scratch,
    .swiglu = cpu_swiglu,
    .swiglu_bwd = cpu_swiglu_bwd,
    .matmul_rows_swiglu = cpu_matmul_rows_swiglu,
    .gather_rows = cpu_gather_rows,
    .scatter_add_rows = cpu_scatter_add_rows,
    .add = cpu_add,
    .add_bias = cpu_add_bias,
    .bias_bwd = cpu_bias_bwd,
    .embed = cpu_embed,
    .embed_bwd = cpu_embed_bwd,
    .logsoftmax = cpu_logsoftmax,
    .logsoftmax_bwd = cpu_logsoftmax_bwd,
    .sample_rows = cpu_sample_rows,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .adamw = cpu_adamw,
};
