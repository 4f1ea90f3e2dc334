/* Sampling: the warped distribution equals an independent computation of the
 * intended truncated, renormalized distribution, and empirical frequencies
 * match it within a tolerance from the sample size. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "sample.h"

#define V 12
static const float logits[V] = {2.0f, 1.5f, 1.5f, 0.3f, -0.2f, 3.1f, -1.0f, 0.9f, 2.4f, -3.0f, 0.0f, 1.1f};

/* Reference: sort by probability, apply each warper as its definition says. */
static void reference(const struct sampler *c, double *out)
{
    double p[V], m = -1e300, z = 0;
    for (int i = 0; i < V; i++) m = fmax(m, (double)logits[i] / c->temperature);
    for (int i = 0; i < V; i++) z += p[i] = exp((double)logits[i] / c->temperature - m);
    for (int i = 0; i < V; i++) p[i] /= z;
    int order[V];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < V; i++)                     /* selection sort, descending, ties by id */
        for (int j = i + 1; j < V; j++)
            if (p[order[j]] > p[order[i]] || (p[order[j]] == p[order[i]] && order[j] < order[i])) {
                int t = order[i]; order[i] = order[j]; order[j] = t;
            }
    int keep = V;
    if (c->top_k > 0 && c->top_k < keep) keep = c->top_k;
    double kept[V] = {0};
    for (int i = 0; i < keep; i++) kept[order[i]] = p[order[i]];
    if (c->top_p < 1) {                              /* smallest prefix whose mass reaches top_p */
        double tot = 0, acc = 0;
        for (int i = 0; i < keep; i++) tot += kept[order[i]];
        int k = 0;
        while (k < keep && acc < c->top_p * tot) acc += kept[order[k++]];
        for (int i = k; i < keep; i++) kept[order[i]] = 0;
    }
    if (c->min_p > 0) {
        double top = kept[order[0]];
        for (int i = 0; i < V; i++) if (kept[i] < c->min_p * top) kept[i] = 0;
    }
    double tot = 0;
    for (int i = 0; i < V; i++) tot += kept[i];
    for (int i = 0; i < V; i++) out[i] = kept[i] / tot;
}

static void check_config(const char *name, struct sampler c, int draws)
{
    struct sample_scratch s;
    sample_scratch_init(&s, V);
    double want[V], got[V];
    reference(&c, want);
    sample_distribution(&c, logits, V, &s, got);
    double err = 0;
    for (int i = 0; i < V; i++) err = harness_max(err, fabs(want[i] - got[i]));
    char label[160];
    snprintf(label, sizeof label, "%s: distribution equals the reference", name);
    CHECKF(label, err < 1e-12, "max difference %g", err);
    struct rng r;
    rng_seed(&r, 42);
    int count[V] = {0};
    double lp;
    for (int k = 0; k < draws; k++)
        count[sample_next(&c, logits, V, &r, &s, &lp)]++;
    double worst = 0;
    int zero_violations = 0;
    for (int i = 0; i < V; i++) {
        double f = (double)count[i] / draws, sd = sqrt(want[i] * (1 - want[i]) / draws) + 1e-12;
        worst = harness_max(worst, fabs(f - want[i]) / sd);
        zero_violations += want[i] == 0 && count[i] > 0;
    }
    snprintf(label, sizeof label, "%s: %d draws match it (within 5 sigma), dropped tokens never drawn", name, draws);
    CHECKF(label, worst < 5 && !zero_violations, "worst deviation %.2f sigma, %d dropped tokens drawn", worst,
           zero_violations);
    sample_scratch_free(&s);
}

static void test_logp_and_greedy(void)
{
    struct sample_scratch s;
    sample_scratch_init(&s, V);
    struct sampler greedy = {.temperature = 0, .top_p = 1};
    struct rng r;
    rng_seed(&r, 1);
    double lp, z = 0;
    int t = sample_next(&greedy, logits, V, &r, &s, &lp);
    for (int i = 0; i < V; i++) z += exp(logits[i]);
    CHECK("temperature 0 picks the maximum", t == 5);
    CHECKF("logp is the temperature-1 log-softmax", fabs(lp - (logits[5] - log(z))) < 1e-12, "%g", lp);
    struct sampler hot = {.temperature = 2.5f, .top_p = 1};
    t = sample_next(&hot, logits, V, &r, &s, &lp);
    CHECKF("logp stays at temperature 1 when sampling hot", fabs(lp - (logits[t] - log(z))) < 1e-12, "%g", lp);
    struct sampler tiny = {.temperature = 1, .top_p = 1e-9f};
    int same = 1;
    for (int k = 0; k < 100; k++) same &= sample_next(&tiny, logits, V, &r, &s, &lp) == 5;
    CHECK("a tiny top-p keeps only the most likely token", same);
    sample_scratch_free(&s);
}

/* n logits, scale times standard normals from the rng r seeded by seed */
static float *normal_logits(int n, float scale, struct rng *r, uint64_t seed)
{
    float *lg = malloc(n * sizeof *lg);
    rng_seed(r, seed);
    for (int i = 0; i < n; i++) lg[i] = scale * rng_normal(r);
    return lg;
}

/* A large vocabulary: top-p and top-k pick from candidates without sorting all. */
static void test_large_vocab(void)
{
    int n = 50000;
    struct rng r;
    float *lg = normal_logits(n, 3, &r, 3);
    struct sample_scratch s;
    sample_scratch_init(&s, n);
    double *p = malloc(n * sizeof *p);
    struct sampler c = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 0};
    sample_distribution(&c, lg, n, &s, p);
    /* check against a full sort */
    double *q = malloc(n * sizeof *q), m = -1e300, z = 0, mass = 0;
    for (int i = 0; i < n; i++) m = fmax(m, lg[i] / 0.8);
    for (int i = 0; i < n; i++) z += q[i] = exp(lg[i] / 0.8 - m);
    int kept = 0, wrong = 0;
    for (int i = 0; i < n; i++) kept += p[i] > 0;
    /* every kept token is at least as likely as every dropped one, and the kept mass reaches 0.9 */
    double min_kept = 1, max_dropped = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] > 0) { min_kept = fmin(min_kept, q[i] / z); mass += q[i] / z; }
        else max_dropped = fmax(max_dropped, q[i] / z);
    }
    wrong = !(min_kept >= max_dropped) || mass < 0.9 || mass - min_kept >= 0.9;
    CHECKF("top-p 0.9 on 50k tokens keeps exactly the smallest sufficient set", !wrong && kept > 1,
           "kept %d, mass %g, min kept %g, max dropped %g", kept, mass, min_kept, max_dropped);
    free(lg); free(p); free(q);
    sample_scratch_free(&s);
}

/* The plain draw (what a backend's sample_rows computes): its token's
 * cumulative interval holds u, by an independent long-double computation;
 * stored and recomputed probabilities give the same token; and sample_next
 * draws exactly that token for the uniform it takes from its rng. */
static void test_plain(void)
{
    int n = 5000, bad_interval = 0, bad_paths = 0, bad_next = 0;
    struct rng r;
    float *lg = normal_logits(n, 2, &r, 11);
    struct sample_scratch s;
    sample_scratch_init(&s, n);
    long double *cum = malloc((n + 1) * sizeof *cum);
    float temps[] = {1, 0.6f, 1.9f};
    for (int t = 0; t < 3; t++) {
        long double z = 0;
        cum[0] = 0;
        for (int i = 0; i < n; i++) cum[i + 1] = z += expl((long double)lg[i] / temps[t]);
        for (int k = 0; k < 300; k++) {
            struct rng a = r;
            double u = rng_uniform_double(&a), lp1, lp2, lp3;
            int tok = sample_plain(lg, n, temps[t], u, NULL, &lp1);
            int tok2 = sample_plain(lg, n, temps[t], u, s.p, &lp2);
            int tok3 = sample_next(&(struct sampler){temps[t], 1, 0, 0}, lg, n, &r, &s, &lp3);
            bad_interval += !(cum[tok] / z <= u * (1 + 1e-12L) && u < cum[tok + 1] / z * (1 + 1e-12L));
            bad_paths += tok != tok2 || lp1 != lp2;
            bad_next += tok != tok3 || lp1 != lp3;
        }
    }
    CHECKF("sample_plain: the token's cumulative interval holds u", !bad_interval, "%d of 900", bad_interval);
    CHECKF("sample_plain: stored and recomputed probabilities, the same token and log-prob", !bad_paths,
           "%d of 900", bad_paths);
    CHECKF("sample_next with a plain sampler draws sample_plain's token for its uniform", !bad_next, "%d of 900",
           bad_next);
    CHECK("samplers without top-k, top-p and min-p are plain",
          sampler_plain(&(struct sampler){0.7f, 1, 0, 0}) && !sampler_plain(&(struct sampler){1, 0.9f, 0, 0}) &&
              !sampler_plain(&(struct sampler){1, 1, 0.1f, 0}) && !sampler_plain(&(struct sampler){1, 1, 0, 5}));
    free(lg); free(cum);
    sample_scratch_free(&s);
}

int main(void)
{
    test_plain();
    check_config("temperature 1", (struct sampler){1, 1, 0, 0}, 200000);
    check_config("temperature 0.5", (struct sampler){0.5f, 1, 0, 0}, 200000);
    check_config("temperature 1.7", (struct sampler){1.7f, 1, 0, 0}, 200000);
    check_config("top-k 3", (struct sampler){1, 1, 0, 3}, 200000);
    check_config("top-p 0.8", (struct sampler){1, 0.8f, 0, 0}, 200000);
    check_config("min-p 0.2", (struct sampler){1, 1, 0.2f, 0}, 200000);
    check_config("T 0.7 + top-k 5 + top-p 0.9 + min-p 0.1", (struct sampler){0.7f, 0.9f, 0.1f, 5}, 200000);
    test_logp_and_greedy();
    test_large_vocab();
    return harness_exit();
}
