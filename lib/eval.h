/* Evaluation statistics over scored generations and pairs (rl-eval).
 * One accumulator per group; every statistic is computed from what the
 * records carry, and reported only when the fields for it were present. */
#ifndef RLFLOW_EVAL_H
#define RLFLOW_EVAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dvec { double *v; size_t n, cap; };
void dvec_push(struct dvec *d, double x);
void dvec_free(struct dvec *d);
double dvec_mean(const struct dvec *d);
double dvec_std(const struct dvec *d);      /* population standard deviation */
double dvec_median(struct dvec *d);         /* sorts in place */

struct eval_group {
    char *key;                   /* the --by value as JSON text, or "all" */
    uint64_t records, samples;
    struct dvec reward, first, best;        /* all samples; first sample; best of n */
    struct dvec len_tokens, len_chars;
    uint64_t finish_stop, finish_length, finish_other;
    struct dvec kl;                         /* logps[j] - ref_logps[j] */
    uint64_t pairs, pairs_correct, pairs_tied;
    struct dvec pair_margin;
    /* against a baseline: per aligned sample, outcome 1 / 0.5 / 0 and length gap */
    struct dvec win, len_gap;
};

void eval_group_free(struct eval_group *g);

/* The length-controlled win rate (see man/rl-eval.1): fits
 *   logit P(win_i) = theta + phi * tanh(len_gap_i / sd(len_gap))
 * by maximum likelihood with soft labels (ties = 1/2) and a ridge penalty of
 * 1e-4 per sample on (theta, phi), and returns sigmoid(theta): the win rate
 * the fit predicts at equal lengths. NaN with no samples. */
double eval_lc_win_rate(const struct dvec *win, const struct dvec *len_gap);

/* Number of Unicode characters (code points) in UTF-8 text. */
size_t utf8_chars(const char *s, size_t n);
#endif

/* ---- the baseline of --baseline: rewards and lengths by record id ---- */
struct eval_baseline;
struct eval_sample_set {         /* one baseline record */
    double *reward;
    double *length;              /* tokens when the record had response_ids, else characters */
    size_t n;
    bool tokens;
};
/* Loads every record of `path` that has `reward_field`; ids must be unique. */
struct eval_baseline *eval_baseline_load(const char *path, const char *reward_field);
const struct eval_sample_set *eval_baseline_find(const struct eval_baseline *b, const char *id, size_t n);
void eval_baseline_free(struct eval_baseline *b);

/* Lengths of a generation record's responses: tokens from response_ids when
 * present (*tokens = true), else characters of responses. -1: bad record. */
struct rec;
int eval_lengths(const struct rec *r, size_t n, struct dvec *out, bool *tokens);
