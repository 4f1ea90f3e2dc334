#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void sample_scratch_init(struct sample_scratch *s, int V)
{
    s->p = rl_malloc((size_t)V * sizeof *s->p);
    s->q = rl_malloc((size_t)V * sizeof *s->q);
    s->idx = rl_malloc((size_t)V * sizeof *s->idx);
    s->V = V;
}

void sample_scratch_free(struct sample_scratch *s)
{
    free(s->p);
    free(s->q);
    free(s->idx);
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

static const double *sort_base;
static int by_prob_desc(const void *a, const void *b)
{
    double x = sort_base[*(const int *)a], y = sort_base[*(const int *)b];
    if (x != y)
        return x < y ? 1 : -1;
    return *(const int *)a - *(const int *)b;        /* ties: lower id first */
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
                s->idx[n++] = i;
                mass += s->p[i];
            }
        if ((mass >= need_mass && n >= need_k) || n == V || t < 1e-300) {
            sort_base = s->p;
            qsort(s->idx, (size_t)n, sizeof *s->idx, by_prob_desc);
            return n;
        }
    }
}

/* Leaves s->p as the final (unnormalized) distribution: 0 for dropped tokens. */
static void warp(const struct sampler *c, const float *logits, int V, struct sample_scratch *s)
{
    double inv_t = 1.0 / c->temperature, lse = logsumexp(logits, V, inv_t), pmax = 0;
    for (int i = 0; i < V; i++) {
        s->p[i] = exp(logits[i] * inv_t - lse);
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
                total += s->p[s->idx[i]];
            int k = 0;
            while (k < keep && mass < c->top_p * total)     /* the smallest prefix reaching top_p */
                mass += s->p[s->idx[k++]];
            keep = k > 0 ? k : 1;
        }
        /* keep the first `keep` candidates, drop everything else */
        for (int i = 0; i < keep; i++)
            s->q[i] = s->p[s->idx[i]];
        memset(s->p, 0, (size_t)V * sizeof *s->p);
        for (int i = 0; i < keep; i++)
            s->p[s->idx[i]] = s->q[i];
    }
    if (c->min_p > 0) {                  /* relative to the most likely token */
        double top = 0;
        for (int i = 0; i < V; i++)
            top = s->p[i] > top ? s->p[i] : top;
        for (int i = 0; i < V; i++)
            if (s->p[i] < c->min_p * top)
                s->p[i] = 0;
    }
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

int sample_next(const struct sampler *c, const float *logits, int V, struct rng *r, struct sample_scratch *s,
                double *logp1)
{
    int tok;
    if (c->temperature <= 0) {
        tok = argmax(logits, V);
    } else {
        warp(c, logits, V, s);
        double tot = 0;
        for (int i = 0; i < V; i++)
            tot += s->p[i];
        double u = rng_uniform_double(r) * tot, acc = 0;
        tok = -1;
        for (int i = 0; i < V; i++) {
            if (s->p[i] <= 0)
                continue;
            acc += s->p[i];
            tok = i;
            if (u < acc)
                break;
        }
    }
    *logp1 = logits[tok] - logsumexp(logits, V, 1.0);
    return tok;
}
