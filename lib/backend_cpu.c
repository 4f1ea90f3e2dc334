/* The CPU backend: OpenBLAS sgemm for every matmul, OpenMP loops for the
 * rest. Reductions that feed a normalisation (RMS, softmax sums) accumulate in
 * double: it costs nothing measurable here and keeps results independent of
 * how a row is split. No op allocates. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "err.h"

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

/* One dot product in an order fixed by k alone (32 interleaved partial
 * sums, then the tail, then the sums in order): never by the addresses or the
 * other rows, so equal inputs give equal bits. */
static float dot_fixed(const float *a, const float *b, int k)
{
    float acc[32] = {0};
    int t = 0;
    for (; t + 32 <= k; t += 32)
        for (int u = 0; u < 32; u++)
            acc[u] += a[t + u] * b[t + u];
    float s = 0;
    for (; t < k; t++)
        s += a[t] * b[t];
    for (int u = 0; u < 32; u++)
        s += acc[u];
    return s;
}

static void cpu_matmul_rows(float *c, const float *a, const float *b, int m, int n, int k)
{
    /* each weight row is read once from memory and used for all m rows */
#pragma omp parallel for schedule(static) if (PAR((size_t)n * k))
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++)
            c[(size_t)i * n + j] = dot_fixed(a + (size_t)i * k, b + (size_t)j * k, k);
}

static void cpu_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * d))
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++)
            ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / d + eps));
        rstd[i] = r;
        for (int j = 0; j < d; j++)
            yi[j] = w[j] * (xi[j] * r);
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

static void cpu_rope(float *x, int stride, const int *pos, int n, int n_heads, int head_dim,
                     const float *cos_t, const float *sin_t, bool inverse)
{
    int half = head_dim / 2;
    float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) if (PAR((size_t)n * n_heads * head_dim))
    for (int i = 0; i < n; i++) {
        const float *c = cos_t + (size_t)pos[i] * half, *s = sin_t + (size_t)pos[i] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)i * stride + (size_t)h * head_dim;
            for (int j = 0; j < half; j++) {
                float a = v[j], b = v[j + half], sj = sgn * s[j];
                v[j] = a * c[j] - b * sj;
                v[j + half] = b * c[j] + a * sj;
            }
        }
    }
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

static void cpu_attention(float *out, int out_stride, const float *q, int q_stride,
                          const struct bk_attn_seq *s, int n_seq,
                          int n_heads, int n_kv, int head_dim, float scale)
{
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

static void cpu_attention_bwd(float *dq, int q_stride, const float *dout, int dout_stride, const float *q,
                              const struct bk_attn_seq *s, int n_seq,
                              int n_heads, int n_kv, int head_dim, float scale)
{
    int tasks = n_seq * n_kv;
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < tasks; t++)
        attn_bwd_group(dq, q_stride, dout, dout_stride, q, &s[t / n_kv], t % n_kv, n_heads, n_kv, head_dim, scale);
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

static void cpu_softmax(float *x, int n, int v)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)n * v))
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * v;
        float mx = -INFINITY;
        for (int j = 0; j < v; j++)
            if (r[j] > mx)
                mx = r[j];
        double s = 0;
        for (int j = 0; j < v; j++) {
            r[j] = expf(r[j] - mx);
            s += r[j];
        }
        float inv = (float)(1.0 / s);
        for (int j = 0; j < v; j++)
            r[j] *= inv;
    }
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

static void cpu_adamw(float *w, const float *g, float *m, float *v, size_t n,
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
        w[i] *= decay;
        m[i] = m[i] * beta1 + g[i] * omb1;
        v[i] = v[i] * beta2 + omb2 * g[i] * g[i];
        float denom = sqrtf(v[i]) / bc2s + eps;
        w[i] -= step * (m[i] / denom);
    }
}

const struct backend backend_cpu = {
    .name = "cpu",
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
    .rope = cpu_rope,
    .attention = cpu_attention,
    .attention_bwd = cpu_attention_bwd,
    .swiglu = cpu_swiglu,
    .swiglu_bwd = cpu_swiglu_bwd,
    .add = cpu_add,
    .add_bias = cpu_add_bias,
    .bias_bwd = cpu_bias_bwd,
    .embed = cpu_embed,
    .embed_bwd = cpu_embed_bwd,
    .logsoftmax = cpu_logsoftmax,
    .logsoftmax_bwd = cpu_logsoftmax_bwd,
    .softmax = cpu_softmax,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .adamw = cpu_adamw,
};

const struct backend *backend_get(const char *name)
{
    if (!name || !strcmp(name, "cpu"))
        return &backend_cpu;
    if (!strcmp(name, "cuda"))
        return rl_err("device \"cuda\": this build has no CUDA backend (built without nvcc)"), NULL;
    return rl_err("unknown device \"%s\" (expected cpu or cuda)", name), NULL;
}
