/* "devsim": the CPU backend behind pointers the host cannot dereference.
 * alloc hands out host addresses moved by 2^62, which are not canonical x86-64
 * (or AArch64) addresses: a load or store through one faults at once, while
 * pointer arithmetic (w_mem + offset, row offsets) still works. Every op moves
 * its pointers back and calls the CPU op, so results are the CPU's bits. The
 * test suite runs the model, trainers and generation on it to prove that the
 * library crosses between host and backend memory only through upload and
 * download, as a GPU backend requires, on machines without a GPU. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "err.h"

#define SHIFT ((uintptr_t)1 << 62)

static void *real(const void *p) { return p ? (void *)((uintptr_t)p - SHIFT) : NULL; }
#define F(p) ((float *)real(p))
#define I(p) ((const int *)real(p))

static void *sim_alloc(size_t bytes)
{
    void *p = backend_cpu.alloc(bytes);
    return p ? (void *)((uintptr_t)p + SHIFT) : NULL;
}
static void sim_free(void *p) { backend_cpu.free(real(p)); }
static void sim_upload(void *dst, const void *src, size_t n) { backend_cpu.upload(real(dst), src, n); }
static void sim_download(void *dst, const void *src, size_t n) { backend_cpu.download(dst, real(src), n); }
static void sim_zero(float *x, size_t n) { backend_cpu.zero(F(x), n); }
static void sim_copy(float *d, const float *s, size_t n) { backend_cpu.copy(F(d), F(s), n); }

static void sim_matmul(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc)
{
    backend_cpu.matmul(ta, tb, m, n, k, alpha, F(a), lda, F(b), ldb, beta, F(c), ldc);
}
static void sim_matmul_rows(float *c, const float *a, const float *b, int m, int n, int k)
{
    backend_cpu.matmul_rows(F(c), F(a), F(b), m, n, k);
}
static void sim_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps)
{
    backend_cpu.rmsnorm(F(y), F(rstd), F(x), F(w), n, d, eps);
}
static void sim_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w,
                            const float *rstd, int n, int d)
{
    backend_cpu.rmsnorm_bwd(F(dx), F(dw), F(dy), F(x), F(w), F(rstd), n, d);
}
static void sim_add_rmsnorm(float *y, float *rstd, float *x, const float *r, const float *w, int n, int d,
                            float eps)
{
    backend_cpu.add_rmsnorm(F(y), F(rstd), F(x), F(r), F(w), n, d, eps);
}
static void sim_rope(float *x, int stride, const int *pos, int n, int nh, int hd, const float *c,
                     const float *s, bool inverse)
{
    backend_cpu.rope(F(x), stride, I(pos), n, nh, hd, F(c), F(s), inverse);
}

/* The call description is host memory; the buffers it names are not. */
static struct bk_attn_seq *real_seqs(const struct bk_attn_seq *s, int n)
{
    struct bk_attn_seq *r = rl_malloc((size_t)(n ? n : 1) * sizeof *r);
    for (int i = 0; i < n; i++) {
        r[i] = s[i];
        r[i].k = F(s[i].k);
        r[i].v = F(s[i].v);
        r[i].dk = F(s[i].dk);
        r[i].dv = F(s[i].dv);
        r[i].p = F(s[i].p);
        r[i].dp = F(s[i].dp);
        r[i].lse = F(s[i].lse);
    }
    return r;
}
static void sim_attention(float *out, int os, const float *q, int qs, const struct bk_attn_seq *s, int n_seq,
                          int nh, int nkv, int hd, float scale)
{
    struct bk_attn_seq *r = real_seqs(s, n_seq);
    backend_cpu.attention(F(out), os, F(q), qs, r, n_seq, nh, nkv, hd, scale);
    free(r);
}
static void sim_attention_bwd(float *dq, int qs, const float *dout, int ds, const float *q, const float *out,
                              int os, const struct bk_attn_seq *s, int n_seq, int nh, int nkv, int hd, float scale)
{
    struct bk_attn_seq *r = real_seqs(s, n_seq);
    backend_cpu.attention_bwd(F(dq), qs, F(dout), ds, F(q), F(out), os, r, n_seq, nh, nkv, hd, scale);
    free(r);
}
static void sim_kv_append(const struct bk_attn_seq *s, int n_seq, const float *k_src, const float *v_src,
                          int src_stride, int kv_dim)
{
    struct bk_attn_seq *r = real_seqs(s, n_seq);
    backend_cpu.kv_append(r, n_seq, F(k_src), F(v_src), src_stride, kv_dim);
    free(r);
}
static void sim_rope_kv_append(float *qkv, int stride, const int *pos, int nh, int nkv, int hd, const float *c,
                               const float *sn, const struct bk_attn_seq *s, int n_seq)
{
    struct bk_attn_seq *r = real_seqs(s, n_seq);
    backend_cpu.rope_kv_append(F(qkv), stride, I(pos), nh, nkv, hd, F(c), F(sn), r, n_seq);
    free(r);
}
static bool sim_attn_scratch(int n, int ctx, int nh, int hd, bool backward)
{
    return backend_cpu.attn_scratch(n, ctx, nh, hd, backward);
}
static void sim_swiglu(float *h, const float *gu, int n, int f) { backend_cpu.swiglu(F(h), F(gu), n, f); }
static void sim_swiglu_bwd(float *dgu, const float *dh, const float *gu, int n, int f)
{
    backend_cpu.swiglu_bwd(F(dgu), F(dh), F(gu), n, f);
}
static void sim_matmul_rows_swiglu(float *h, float *gu, const float *a, const float *b, int m, int f, int k)
{
    backend_cpu.matmul_rows_swiglu(F(h), F(gu), F(a), F(b), m, f, k);
}
static void sim_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    backend_cpu.gather_rows(F(dst), F(src), I(idx), n, d);
}
static void sim_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    backend_cpu.scatter_add_rows(F(dst), F(src), I(idx), n, d);
}
static void sim_add(float *y, const float *x, size_t n) { backend_cpu.add(F(y), F(x), n); }
static void sim_add_bias(float *y, const float *b, int n, int d) { backend_cpu.add_bias(F(y), F(b), n, d); }
static void sim_bias_bwd(float *db, const float *dy, int n, int d) { backend_cpu.bias_bwd(F(db), F(dy), n, d); }
static void sim_embed(float *x, const float *t, const int *ids, int n, int d)
{
    backend_cpu.embed(F(x), F(t), I(ids), n, d);
}
static void sim_embed_bwd(float *dt, const float *dx, const int *ids, int n, int d)
{
    backend_cpu.embed_bwd(F(dt), F(dx), I(ids), n, d);
}
static void sim_logsoftmax(float *lse, float *logp, const float *x, const int *t, int n, int v)
{
    backend_cpu.logsoftmax(F(lse), F(logp), F(x), I(t), n, v);
}
static void sim_logsoftmax_bwd(float *x, const float *lse, const int *t, const float *g, int n, int v)
{
    backend_cpu.logsoftmax_bwd(F(x), F(lse), I(t), F(g), n, v);
}
static void sim_sample_rows(int *tok, double *lp, const float *x, const double *u, int n, int v,
                            const struct sampler *c)
{
    backend_cpu.sample_rows((int *)real(tok), (double *)real(lp), F(x), (const double *)real(u), n, v, c);
}
static double sim_sumsq(const float *x, size_t n) { return backend_cpu.sumsq(F(x), n); }
static void sim_scale(float *x, float a, size_t n) { backend_cpu.scale(F(x), a, n); }
static void sim_adamw(float *w, const float *g, float gs, float *m, float *v, size_t n, float lr, float b1,
                      float b2, float eps, float wd, double bc1, double bc2s)
{
    backend_cpu.adamw(F(w), F(g), gs, F(m), F(v), n, lr, b1, b2, eps, wd, bc1, bc2s);
}

const struct backend backend_devsim = {
    .name = "devsim",
    .host = false,
    .head_chunk_mb = 64,             /* the CPU's, so that its results are the CPU's bits */
    .alloc = sim_alloc,
    .free = sim_free,
    .upload = sim_upload,
    .download = sim_download,
    .zero = sim_zero,
    .copy = sim_copy,
    .matmul = sim_matmul,
    .matmul_rows = sim_matmul_rows,
    .rmsnorm = sim_rmsnorm,
    .rmsnorm_bwd = sim_rmsnorm_bwd,
    .add_rmsnorm = sim_add_rmsnorm,
    .rope = sim_rope,
    .attention = sim_attention,
    .attention_bwd = sim_attention_bwd,
    .kv_append = sim_kv_append,
    .rope_kv_append = sim_rope_kv_append,
    .attn_scratch = sim_attn_scratch,
    .swiglu = sim_swiglu,
    .swiglu_bwd = sim_swiglu_bwd,
    .matmul_rows_swiglu = sim_matmul_rows_swiglu,
    .gather_rows = sim_gather_rows,
    .scatter_add_rows = sim_scatter_add_rows,
    .add = sim_add,
    .add_bias = sim_add_bias,
    .bias_bwd = sim_bias_bwd,
    .embed = sim_embed,
    .embed_bwd = sim_embed_bwd,
    .logsoftmax = sim_logsoftmax,
    .logsoftmax_bwd = sim_logsoftmax_bwd,
    .sample_rows = sim_sample_rows,
    .sumsq = sim_sumsq,
    .scale = sim_scale,
    .adamw = sim_adamw,
};
