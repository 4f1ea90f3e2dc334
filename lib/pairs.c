#include "pairs.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "rng.h"

static const char *mode_names[] = {
    [PAIR_MAX_MIN] = "max-min", [PAIR_MAX_RANDOM] = "max-random", [PAIR_MAX_MAX] = "max-max",
    [PAIR_RANDOM] = "random", [PAIR_ALL] = "all",
};

int pair_mode_parse(const char *s)
{
    for (size_t i = 0; i < sizeof mode_names / sizeof *mode_names; i++)
        if (!strcmp(s, mode_names[i]))
            return (int)i;
    return -1;
}

const char *pair_mode_name(enum pair_mode m) { return mode_names[m]; }

static double score(const struct pair_opts *o, const struct pair_input *in, size_t i)
{
    return in->reward[i] - (o->len_penalty ? o->len_penalty * (double)in->length[i] : 0);
}

static bool same_text(const struct pair_input *in, size_t a, size_t b)
{
    return in->text[a].n == in->text[b].n && !memcmp(in->text[a].s, in->text[b].s, in->text[a].n);
}

/* May (c, r) be a pair? Strictly better, far enough apart, different texts. */
static bool valid(const struct pair_opts *o, const struct pair_input *in, size_t c, size_t r)
{
    double gap = score(o, in, c) - score(o, in, r);
    return gap > 0 && gap >= o->min_margin && !same_text(in, c, r);
}

/* Index of the best response; the first one wins a tie, so results do not
 * depend on anything but the record. */
static size_t best_index(const struct pair_opts *o, const struct pair_input *in)
{
    size_t b = 0;
    for (size_t i = 1; i < in->n; i++)
        if (score(o, in, i) > score(o, in, b))
            b = i;
    return b;
}

/* Uniform choice among the k-th valid candidate: count, then draw. */
static size_t pick_rejected(const struct pair_opts *o, const struct pair_input *in, size_t best,
                            struct rng *rng, bool *found)
{
    size_t count = 0, pick = 0;
    for (size_t j = 0; j < in->n; j++)
        count += valid(o, in, best, j);
    *found = count > 0;
    if (!count)
        return 0;
    size_t k = (size_t)(rng_uniform_double(rng) * (double)count);
    for (size_t j = 0; j < in->n; j++)
        if (valid(o, in, best, j) && k-- == 0)
            pick = j;
    return pick;
}

static size_t choose_extreme(const struct pair_opts *o, const struct pair_input *in, struct pair *out)
{
    size_t b = best_index(o, in), r = 0;
    bool found = false;
    for (size_t j = 0; j < in->n; j++) {
        if (!valid(o, in, b, j))
            continue;
        /* max-min: the lowest score; max-max: the highest below the best */
        bool better = !found || (o->mode == PAIR_MAX_MIN ? score(o, in, j) < score(o, in, r)
                                                          : score(o, in, j) > score(o, in, r));
        if (better) {
            r = j;
            found = true;
        }
    }
    if (!found)
        return 0;
    out[0] = (struct pair){b, r};
    return 1;
}

static size_t choose_random(const struct pair_opts *o, const struct pair_input *in, struct pair *out,
                            struct rng *rng)
{
    size_t count = 0;
    for (size_t c = 0; c < in->n; c++)
        for (size_t r = 0; r < in->n; r++)
            count += valid(o, in, c, r);
    if (!count)
        return 0;
    size_t k = (size_t)(rng_uniform_double(rng) * (double)count);
    for (size_t c = 0; c < in->n; c++)
        for (size_t r = 0; r < in->n; r++)
            if (valid(o, in, c, r) && k-- == 0) {
                out[0] = (struct pair){c, r};
                return 1;
            }
    return 0;
}

/* Simulated annotators: any two different responses, labelled by a noisy
 * Bradley-Terry comparison of their rewards. */
static size_t choose_annotated(const struct pair_opts *o, const struct pair_input *in, struct pair *out,
                               struct rng *rng)
{
    size_t count = 0;
    for (size_t a = 0; a < in->n; a++)
        for (size_t b = a + 1; b < in->n; b++)
            count += !same_text(in, a, b);
    if (!count)
        return 0;
    size_t k = (size_t)(rng_uniform_double(rng) * (double)count);
    for (size_t a = 0; a < in->n; a++)
        for (size_t b = a + 1; b < in->n; b++)
            if (!same_text(in, a, b) && k-- == 0) {
                double z = (score(o, in, a) - score(o, in, b)) / o->annotate;
                double p = 1 / (1 + exp(-z));
                bool a_wins = rng_uniform_double(rng) < p;
                out[0] = a_wins ? (struct pair){a, b} : (struct pair){b, a};
                return 1;
            }
    return 0;
}

size_t pairs_choose(const struct pair_opts *o, const struct pair_input *in, struct pair *out)
{
    if (in->n < 2)
        return 0;
    struct rng rng;
    rng_seed(&rng, rng_hash(o->seed, in->id, in->id_len, 0));
    if (o->annotate > 0)
        return choose_annotated(o, in, out, &rng);
    switch (o->mode) {
    case PAIR_MAX_MIN:
    case PAIR_MAX_MAX:
        return choose_extreme(o, in, out);
    case PAIR_MAX_RANDOM: {
        bool found;
        size_t b = best_index(o, in);
        size_t r = pick_rejected(o, in, b, &rng, &found);
        if (!found)
            return 0;
        out[0] = (struct pair){b, r};
        return 1;
    }
    case PAIR_RANDOM:
        return choose_random(o, in, out, &rng);
    case PAIR_ALL: {
        size_t k = 0;
        for (size_t c = 0; c < in->n; c++)
            for (size_t r = 0; r < in->n; r++)
                if (valid(o, in, c, r))
                    out[k++] = (struct pair){c, r};
        return k;
    }
    }
    return 0;
}
