/* Choosing the next token from logits. Warpers apply in Hugging Face's
 * order: temperature, then top-k, top-p (nucleus) and min-p, each on the
 * distribution the previous one left; the survivors are renormalized and one
 * is drawn with the sample's own RNG. Temperature 0 is greedy (the first
 * maximal logit). */
#ifndef RLFLOW_SAMPLE_H
#define RLFLOW_SAMPLE_H
#include <stdbool.h>
#include <stddef.h>

#include "rng.h"

struct sampler {
    float temperature;           /* 0: greedy */
    float top_p;                 /* 1: off */
    float min_p;                 /* 0: off */
    int top_k;                   /* 0: off */
};

/* Scratch space for one vocabulary; reuse it across calls (one per thread). */
struct sample_cand {
    double p;
    int id;
};
struct sample_scratch {
    double *p;
    struct sample_cand *cand;
    int V;
};
void sample_scratch_init(struct sample_scratch *s, int V);
void sample_scratch_free(struct sample_scratch *s);

/* Draw a token from logits[0..V); *logp1 = its log-prob under the model at
 * temperature 1 (log-softmax of the raw logits), whatever the warpers. The
 * draw takes one uniform from r when the temperature is above 0, none when
 * greedy. Reentrant: threads may sample at once with scratches of their own. */
int sample_next(const struct sampler *c, const float *logits, int V, struct rng *r, struct sample_scratch *s,
                double *logp1);
/* sample_next's draw for the uniform u it would take from its RNG (unused
 * when greedy): what a backend's sample_rows computes. s may be NULL for a
 * plain sampler (the probabilities are then computed twice). */
int sample_draw(const struct sampler *c, const float *logits, int V, double u, struct sample_scratch *s,
                double *logp1);

/* Whether c draws from the tempered softmax itself (no top-k, top-p or
 * min-p), which needs no sort. Inline: the CUDA backend's library asks too. */
static inline bool sampler_plain(const struct sampler *c)
{
    return c->top_k <= 0 && !(c->top_p < 1) && !(c->min_p > 0);
}
/* The plain draw for the uniform u in [0, 1) (unused when greedy): the
 * first token whose running sum, in id order, of p_i = exp(x_i / t - lse_t)
 * exceeds u times their total; sample_next's token for a plain sampler and
 * the same u. p: V doubles of scratch, or NULL to compute p_i twice. */
int sample_plain(const float *logits, int V, float temperature, double u, double *p, double *logp1);

/* The distribution sample_next draws from, for tests: prob[0..V). */
void sample_distribution(const struct sampler *c, const float *logits, int V, struct sample_scratch *s,
                         double *prob);
#endif
