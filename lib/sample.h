/* Choosing the next token from logits. Warpers apply in Hugging Face's
 * order: temperature, then top-k, top-p (nucleus) and min-p, each on the
 * distribution the previous one left; the survivors are renormalized and one
 * is drawn with the sample's own RNG. Temperature 0 is greedy (the first
 * maximal logit). */
#ifndef RLFLOW_SAMPLE_H
#define RLFLOW_SAMPLE_H
#include <stddef.h>

#include "rng.h"

struct sampler {
    float temperature;           /* 0: greedy */
    float top_p;                 /* 1: off */
    float min_p;                 /* 0: off */
    int top_k;                   /* 0: off */
};

/* Scratch space for one vocabulary; reuse it across calls. */
struct sample_scratch {
    double *p, *q;
    int *idx;
    int V;
};
void sample_scratch_init(struct sample_scratch *s, int V);
void sample_scratch_free(struct sample_scratch *s);

/* Draw a token from logits[0..V); *logp1 = its log-prob under the model at
 * temperature 1 (log-softmax of the raw logits), whatever the warpers. */
int sample_next(const struct sampler *c, const float *logits, int V, struct rng *r, struct sample_scratch *s,
                double *logp1);

/* The distribution sample_next draws from, for tests: prob[0..V). */
void sample_distribution(const struct sampler *c, const float *logits, int V, struct sample_scratch *s,
                         double *prob);
#endif
