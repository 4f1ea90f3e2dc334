#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void sample_scratch_init(struct sample_scratch *s, int V)
{
    s->p = rl_malloc((size_t)V * sizeof *s->p);
    s->cand = rl_malloc((size_t)V * sizeof *s->cand);
    s->V = V;
}

void sample_scratch_free(struct sample_scratch *s)
{
    free(s->p);
    free(s->cand);
    *s = (struct sample_scratch){0};
}

static int argmax(const float *x, int V)
{
    int b = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

static double logsumexp(const float *x, int V, double scale)
{
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < V; i++)
        if (x[i] * scale > mx)
            mx = x[i] * scale;
    for (int i = 0; i < V; i++)
        s += exp(x[i] * scale - mx);
    return mx + log(s);
}

/* A token's probability at the temperature: one expression for every path,
 * so that the stored and the recomputed values are the same bits. */
static inline double tempered(float x, double inv_t, double lse) { return exp(x * inv_t - lse); }

/* The first token with p > 0 whose running sum exceeds u times the total
 * (the last with p > 0 when rounding leaves none); p_i is p[i], or, where
 * p is NULL, tempered(x[i], inv_t, lse) computed on the way. */
static int draw(const double *p, const float *x, double inv_t, double lse, int V, double u)
{
    double tot = 0, acc = 0;
    for (int i = 0; i < V; i++)
        tot += p ? p[i] : tempered(x[i], inv_t, lse);
    double target = u * tot;
    int tok = -1;
    for (int i = 0; i < V; i++) {
        double pi = p ? p[i] : tempered(x[i], inv_t, lse);
        if (pi <= 0)
            continue;
        acc += pi;
        tok = i;
        if (target < acc)
            break;
    }
    return tok;
}

static int by_prob_desc(const void *a, const void *b)
{
    const struct sample_cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p < y->p ? 1 : -1;
    return x->id - y->id;                             /* ties: lower id first */
}

/* Candidates sorted by probability, enough of them for top-k and top-p:
 * every token with p >= t for a threshold t whose set already holds the
 * needed mass and count (lowered until it does), so the vocabulary is rarely
 * sorted in full. Returns the count. */
static int sorted_candidates(const struct sampler *c, struct sample_scratch *s, int V, double pmax)
{
    double need_mass = c->top_p < 1 ? c->top_p : 0;
    int need_k = c->top_k > 0 ? c->top_k : 0;
    for (double t = pmax * 1e-3;; t *= 1e-3) {
        int n = 0;
        double mass = 0;
        for (int i = 0; i < V; i++)
            if (s->p[i] >= t || t < 1e-300) {
                s->cand[n++] = (struct sample_cand){s->p[i], i};
                mass += s->p[i];
            }
        if ((mass >= need_mass && n >= need_k) || n == V || t < 1e-300) {
            qsort(s->cand, (size_t)n, sizeof *s->cand, by_prob_desc);
            return n;
        }
    }
}

/* Leaves s->p as the final (unnormalized) distribution: 0 for dropped
 * tokens. Returns the log-sum-exp of the tempered logits. */
static double warp(const struct sampler *c, const float *logits, int V, struct sample_scratch *s)
{
    double inv_t = 1.0 / c->temperature, lse = logsumexp(logits, V, inv_t), pmax = 0;
    for (int i = 0; i < V; i++) {
        s->p[i] = tempered(logits[i], inv_t, lse);
        if (s->p[i] > pmax)
            pmax = s->p[i];
    }
    if (c->top_k > 0 || c->top_p < 1) {
        int n = sorted_candidates(c, s, V, pmax), keep = n;
        if (c->top_k > 0 && c->top_k < keep)
            keep = c->top_k;
        if (c->top_p < 1) {
            /* top-p reads the distribution top-k left, renormalized; without
             * top-k that is the whole (normalized) vocabulary */
            double total = c->top_k > 0 ? 0 : 1, mass = 0;
            for (int i = 0; c->top_k > 0 && i < keep; i++)
                total += s->cand[i].p;
            int k = 0;
            while (k < keep && mass < c->top_p * total)     /* the smallest prefix reaching top_p */
                mass += s->cand[k++].p;
            keep = k > 0 ? k : 1;
        }
        /* keep the first `keep` candidates, drop everything else */
        memset(s->p, 0, (size_t)V * sizeof *s->p);
        for (int i = 0; i < keep; i++)
            s->p[s->cand[i].id] = s->cand[i].p;
    }
    if (c->min_p > 0) {                  /* relative to the most likely token */
        double top = 0;
        for (int i = 0; i < V; i++)
            top = s->p[i] > top ? s->p[i] : top;
        for (int i = 0; i < V; i++)
            if (s->p[i] < c->min_p * top)
                s->p[i] = 0;
    }
    return lse;
}

void sample_distribution(const struct sampler *c, const float *logits, int V, struct sample_scratch *s,
                         double *prob)
{
    if (c->temperature <= 0) {
        memset(prob, 0, (size_t)V * sizeof *prob);
        prob[argmax(logits, V)] = 1;
        return;
    }
    warp(c, logits, V, s);
    double tot = 0;
    for (int i = 0; i < V; i++)
        tot += s->p[i];
    for (int i = 0; i < V; i++)
        prob[i] = s->p[i] / tot;
}

int sample_plain(const float *logits, int V, float temperature, double u, double *p, double *logp1)
{
    if (temperature <= 0) {
        int tok = argmax(logits, V);
        *logp1 = logits[tok] - logsumexp(logits, V, 1.0);
        return tok;
    }
    double inv_t = 1.0 / temperature, lse = logsumexp(logits, V, inv_t);
    for (int i = 0; p && i < V; i++)      /* stored: each exp once */
        p[i] = tempered(logits[i], inv_t, lse);
    int tok = draw(p, logits, inv_t, lse, V, u);
    *logp1 = logits[tok] - (inv_t == 1.0 ? lse : logsumexp(logits, V, 1.0));
    return tok;
}

int sample_next(const struct sampler *c, const float *logits, int V, struct rng *r, struct sample_scratch *s,
                double *logp1)
{
    double u = c->temperature > 0 ? rng_uniform_double(r) : 0;
    return sample_draw(c, logits, V, u, s, logp1);
}

int sample_draw(const struct sampler *c, const float *logits, int V, double u, struct sample_scratch *s,
                double *logp1)
{
    if (c->temperature <= 0 || sampler_plain(c))
        return sample_plain(logits, V, c->temperature, u, s ? s->p : NULL, logp1);
    double lse = warp(c, logits, V, s);
    int tok = draw(s->p, logits, 0, 0, V, u);
    *logp1 = logits[tok] - (c->temperature == 1.0f ? lse : logsumexp(logits, V, 1.0));
    return tok;
}
