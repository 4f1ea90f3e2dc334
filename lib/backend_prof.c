/* RL_PROFILE=1: time every backend op. backend_get wraps the chosen backend
 * in this table, which waits for the device before and after each op (a
 * 4-byte download), so each op's wall time is its own; at exit it prints one
 * line per op (and per matmul shape) to stderr, slowest first, with call
 * counts and, for matmuls, the TFLOP/s they reached. The waits cost about
 * 10 us per op on a GPU: a profiled run is slower, its shares are what count. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_prof.h"
#include "err.h"
#include "tally.h"

#define MAX_KEYS 256

static const struct backend *inner;
static struct backend table;
static float *sync_buf;                  /* backend memory to download from */
static struct tally_entry entries[MAX_KEYS];
static struct tally ops = {entries, 0, MAX_KEYS};
static double t_op;

static void wait_device(void)
{
    float x;
    if (!inner->host)
        inner->download(&x, sync_buf, sizeof x);
}

static void begin(void)
{
    wait_device();
    t_op = tally_now();
}

static void end(const char *key, double flops)
{
    wait_device();
    tally_add(&ops, key, tally_now() - t_op, flops);
}

void backend_prof_report(FILE *f, const char *title)
{
    if (!inner || !ops.n)
        return;
    double total = tally_sort(&ops);
    fprintf(f, "profile (%s, device %s): %.4f s in ops\n", title, inner->name, total);
    fprintf(f, "%-40s %8s %10s %6s %8s\n", "op", "calls", "ms", "share", "TFLOP/s");
    for (int i = 0; i < ops.n; i++) {
        const struct tally_entry *e = &entries[i];
        fprintf(f, "%-40s %8ld %10.3f %5.1f%%", e->key, e->calls, e->seconds * 1e3, 100 * e->seconds / total);
        if (e->flops > 0)
            fprintf(f, " %8.1f", e->flops / e->seconds / 1e12);
        fputc('\n', f);
    }
    ops.n = 0;
}

void backend_prof_reset(void) { ops.n = 0; }

static void report_at_exit(void) { backend_prof_report(stderr, "whole run"); }

#define TIMED(key, flops, call) \
    do {                        \
        begin();                \
        call;                   \
        end(key, flops);        \
    } while (0)

static void p_zero(float *x, size_t n) { TIMED("zero", 0, inner->zero(x, n)); }
static void p_copy(float *d, const float *s, size_t n) { TIMED("copy", 0, inner->copy(d, s, n)); }

/* matmuls are told apart by shape: the few big ones are what to look at */
static void p_matmul(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
    char key[64];
    snprintf(key, sizeof key, "matmul %c%c %dx%dx%d%s", ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k,
             beta != 0 ? " +=" : "");
    TIMED(key, 2.0 * m * n * k, inner->matmul(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
}
static void p_matmul_rows(float *c, const float *a, const float *b, int m, int n, int k)
{
    char key[64];
    snprintf(key, sizeof key, "matmul_rows %dx%dx%d", m, n, k);
    TIMED(key, 2.0 * m * n * k, inner->matmul_rows(c, a, b, m, n, k));
}
static void p_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps)
{
    TIMED("rmsnorm", 0, inner->rmsnorm(y, rstd, x, w, n, d, eps));
}
static void p_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w,
                          const float *rstd, int n, int d)
{
    TIMED("rmsnorm_bwd", 0, inner->rmsnorm_bwd(dx, dw, dy, x, w, rstd, n, d));
}
static void p_add_rmsnorm(float *y, float *rstd, float *x, const float *r, const float *w, int n, int d,
                          float eps)
{
    TIMED("add_rmsnorm", 0, inner->add_rmsnorm(y, rstd, x, r, w, n, d, eps));
}
static void p_rope(float *x, int stride, const int *pos, int n, int nh, int hd, const float *c, const float *s,
                   bool inverse)
{
    TIMED(inverse ? "rope (inverse)" : "rope", 0, inner->rope(x, stride, pos, n, nh, hd, c, s, inverse));
}

/* causal attention FLOPs: q.k and p.v over the visible keys */
static double attn_flops(const struct bk_attn_seq *s, int n_seq, int nh, int hd)
{
    double f = 0;
    for (int i = 0; i < n_seq; i++)
        f += 4.0 * nh * hd * ((double)s[i].n * s[i].pos + (double)s[i].n * (s[i].n + 1) / 2);
    return f;
}
static void p_attention(float *out, int os, const float *q, int qs, const struct bk_attn_seq *s, int n_seq,
                        int nh, int nkv, int hd, float scale)
{
    TIMED(n_seq && s[0].n <= 4 ? "attention (decode)" : "attention", attn_flops(s, n_seq, nh, hd),
          inner->attention(out, os, q, qs, s, n_seq, nh, nkv, hd, scale));
}
static void p_attention_bwd(float *dq, int qs, const float *dout, int ds, const float *q, const float *out, int os,
                            const struct bk_attn_seq *s, int n_seq, int nh, int nkv, int hd, float scale)
{
    /* q.k again, then dout.v, dq, dk, dv: 2.5x the forward's products */
    TIMED("attention_bwd", 2.5 * attn_flops(s, n_seq, nh, hd),
          inner->attention_bwd(dq, qs, dout, ds, q, out, os, s, n_seq, nh, nkv, hd, scale));
}
static void p_kv_append(const struct bk_attn_seq *s, int n_seq, const float *k, const float *v, int ss, int kvd)
{
    TIMED("kv_append", 0, inner->kv_append(s, n_seq, k, v, ss, kvd));
}
static void p_rope_kv_append(float *x, int stride, const int *pos, int nh, int nkv, int hd, const float *c,
                             const float *sn, const struct bk_attn_seq *s, int n_seq)
{
    TIMED("rope_kv_append", 0, inner->rope_kv_append(x, stride, pos, nh, nkv, hd, c, sn, s, n_seq));
}
static bool p_attn_scratch(int n, int ctx, int nh, int hd, bool backward)
{
    return inner->attn_scratch(n, ctx, nh, hd, backward);
}
static void p_swiglu(float *h, const float *gu, int n, int f) { TIMED("swiglu", 0, inner->swiglu(h, gu, n, f)); }
static void p_swiglu_bwd(float *dgu, const float *dh, const float *gu, int n, int f)
{
    TIMED("swiglu_bwd", 0, inner->swiglu_bwd(dgu, dh, gu, n, f));
}
static void p_matmul_rows_swiglu(float *h, float *gu, const float *a, const float *b, int m, int f, int k)
{
    char key[64];
    snprintf(key, sizeof key, "matmul_rows_swiglu %dx%dx%d", m, 2 * f, k);
    TIMED(key, 4.0 * m * f * k, inner->matmul_rows_swiglu(h, gu, a, b, m, f, k));
}
static void p_gather_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    TIMED("gather_rows", 0, inner->gather_rows(dst, src, idx, n, d));
}
static void p_scatter_add_rows(float *dst, const float *src, const int *idx, int n, int d)
{
    TIMED("scatter_add_rows", 0, inner->scatter_add_rows(dst, src, idx, n, d));
}
static void p_add(float *y, const float *x, size_t n) { TIMED("add", 0, inner->add(y, x, n)); }
static void p_add_bias(float *y, const float *b, int n, int d) { TIMED("add_bias", 0, inner->add_bias(y, b, n, d)); }
static void p_bias_bwd(float *db, const float *dy, int n, int d) { TIMED("bias_bwd", 0, inner->bias_bwd(db, dy, n, d)); }
static void p_embed(float *x, const float *t, const int *ids, int n, int d)
{
    TIMED("embed", 0, inner->embed(x, t, ids, n, d));
}
static void p_embed_bwd(float *dt, const float *dx, const int *ids, int n, int d)
{
    TIMED("embed_bwd", 0, inner->embed_bwd(dt, dx, ids, n, d));
}
static void p_logsoftmax(float *lse, float *logp, const float *x, const int *t, int n, int v)
{
    TIMED("logsoftmax", 0, inner->logsoftmax(lse, logp, x, t, n, v));
}
static void p_logsoftmax_bwd(float *x, const float *lse, const int *t, const float *g, int n, int v)
{
    TIMED("logsoftmax_bwd", 0, inner->logsoftmax_bwd(x, lse, t, g, n, v));
}
static void p_sample_rows(int *tok, double *lp, const float *x, const double *u, int n, int v,
                          const struct sampler *c)
{
    TIMED("sample_rows", 0, inner->sample_rows(tok, lp, x, u, n, v, c));
}
static double p_sumsq(const float *x, size_t n)
{
    double r;
    TIMED("sumsq", 0, r = inner->sumsq(x, n));
    return r;
}
static void p_scale(float *x, float a, size_t n) { TIMED("scale", 0, inner->scale(x, a, n)); }
static void p_adamw(float *w, const float *g, float gs, float *m, float *v, size_t n, float lr, float b1, float b2,
                    float eps, float wd, double bc1, double bc2s)
{
    TIMED("adamw", 0, inner->adamw(w, g, gs, m, v, n, lr, b1, b2, eps, wd, bc1, bc2s));
}

const struct backend *backend_profiled(const struct backend *bk)
{
    if (!bk || inner)
        return inner == bk ? &table : bk;    /* one profiled backend per process */
    if (!bk->host && !(sync_buf = bk->alloc(sizeof *sync_buf)))
        return rl_err("RL_PROFILE: out of device memory"), NULL;
    inner = bk;
    table = *bk;                             /* name, host, detail, memory ops as they are */
    /* each op's waits would end a graph's capture at once: ops one by one */
    table.graph_begin = table.graph_end = NULL;
    table.zero = p_zero;
    table.copy = p_copy;
    table.matmul = p_matmul;
    table.matmul_rows = p_matmul_rows;
    table.rmsnorm = p_rmsnorm;
    table.rmsnorm_bwd = p_rmsnorm_bwd;
    table.add_rmsnorm = p_add_rmsnorm;
    table.rope = p_rope;
    table.attention = p_attention;
    table.attention_bwd = p_attention_bwd;
    table.kv_append = p_kv_append;
    table.rope_kv_append = p_rope_kv_append;
    table.attn_scratch = p_attn_scratch;
    table.swiglu = p_swiglu;
    table.swiglu_bwd = p_swiglu_bwd;
    table.matmul_rows_swiglu = p_matmul_rows_swiglu;
    table.gather_rows = p_gather_rows;
    table.scatter_add_rows = p_scatter_add_rows;
    table.add = p_add;
    table.add_bias = p_add_bias;
    table.bias_bwd = p_bias_bwd;
    table.embed = p_embed;
    table.embed_bwd = p_embed_bwd;
    table.logsoftmax = p_logsoftmax;
    table.logsoftmax_bwd = p_logsoftmax_bwd;
    table.sample_rows = p_sample_rows;
    table.sumsq = p_sumsq;
    table.scale = p_scale;
    table.adamw = p_adamw;
    atexit(report_at_exit);
    return &table;
}

bool backend_prof_wanted(void)
{
    const char *e = getenv("RL_PROFILE");
    return e && *e && strcmp(e, "0");
}
