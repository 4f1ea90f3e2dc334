/* Choosing preference pairs from one prompt's scored samples (rl-pair).
 * Responses are ranked by score_i = reward_i - len_penalty * length_i.
 * A pair needs a strictly higher score for the chosen response and two
 * different texts: ties and identical responses would only add a constant
 * log 2 to the DPO loss, so they never make a pair. */
#ifndef RLFLOW_PAIRS_H
#define RLFLOW_PAIRS_H
#include <stddef.h>
#include <stdint.h>

#include "rec.h"

enum pair_mode { PAIR_MAX_MIN, PAIR_MAX_RANDOM, PAIR_MAX_MAX, PAIR_RANDOM, PAIR_ALL };

struct pair_opts {
    enum pair_mode mode;
    double len_penalty;
    double min_margin;          /* chosen score - rejected score must be >= this (and > 0) */
    uint64_t seed;
    /* > 0: simulated annotators. A uniformly chosen pair of different
     * responses is labelled by a Bradley-Terry draw: the first is chosen with
     * probability sigmoid((r_a - r_b) / annotate). Ties are labelled 50/50. */
    double annotate;
};

struct pair { size_t chosen, rejected; };

/* The candidates of one record. */
struct pair_input {
    size_t n;
    const struct rec_str *text;  /* n response texts */
    const double *reward;        /* n rewards */
    const size_t *length;        /* n lengths in tokens (used when len_penalty != 0) */
    const char *id;              /* the record id, for the per-record RNG */
    size_t id_len;
};

/* Writes up to n*(n-1) pairs into out (caller-sized); returns how many. */
size_t pairs_choose(const struct pair_opts *o, const struct pair_input *in, struct pair *out);

/* "max-min" etc. -> mode; -1 if unknown. */
int pair_mode_parse(const char *s);
const char *pair_mode_name(enum pair_mode m);
#endif
