#include "eval.h"

#include <math.h>
#include <stdlib.h>

#include "err.h"

void dvec_push(struct dvec *d, double x)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->v = rl_realloc(d->v, d->cap * sizeof *d->v);
    }
    d->v[d->n++] = x;
}

void dvec_free(struct dvec *d)
{
    free(d->v);
    *d = (struct dvec){0};
}

double dvec_mean(const struct dvec *d)
{
    if (!d->n)
        return NAN;
    double s = 0;
    for (size_t i = 0; i < d->n; i++)
        s += d->v[i];
    return s / (double)d->n;
}

double dvec_std(const struct dvec *d)
{
    if (!d->n)
        return NAN;
    double m = dvec_mean(d), s = 0;
    for (size_t i = 0; i < d->n; i++)
        s += (d->v[i] - m) * (d->v[i] - m);
    return sqrt(s / (double)d->n);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double dvec_median(struct dvec *d)
{
    if (!d->n)
        return NAN;
    qsort(d->v, d->n, sizeof *d->v, cmp_double);
    return d->n % 2 ? d->v[d->n / 2] : 0.5 * (d->v[d->n / 2 - 1] + d->v[d->n / 2]);
}

void eval_group_free(struct eval_group *g)
{
    free(g->key);
    struct dvec *all[] = {&g->reward, &g->first, &g->best, &g->len_tokens, &g->len_chars,
                          &g->kl, &g->pair_margin, &g->win, &g->len_gap};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        dvec_free(all[i]);
}

static double sigmoid(double z) { return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)); }

/* Two-parameter logistic regression by Newton's method on the penalized
 * log-likelihood; the problem is convex, so this converges from zero. */
double eval_lc_win_rate(const struct dvec *win, const struct dvec *len_gap)
{
    size_t n = win->n;
    if (!n)
        return NAN;
    double sd = dvec_std(len_gap);
    double lambda = 1e-4 * (double)n, theta = 0, phi = 0;
    for (int it = 0; it < 100; it++) {
        double g0 = -lambda * theta, g1 = -lambda * phi;
        double h00 = lambda, h01 = 0, h11 = lambda;
        for (size_t i = 0; i < n; i++) {
            double x = sd > 0 ? tanh(len_gap->v[i] / sd) : 0;
            double p = sigmoid(theta + phi * x), w = p * (1 - p), r = win->v[i] - p;
            g0 += r;
            g1 += r * x;
            h00 += w;
            h01 += w * x;
            h11 += w * x * x;
        }
        double det = h00 * h11 - h01 * h01;
        if (!(det > 0))
            break;
        double d0 = (h11 * g0 - h01 * g1) / det, d1 = (h00 * g1 - h01 * g0) / det;
        theta += d0;
        phi += d1;
        if (fabs(d0) + fabs(d1) < 1e-12)
            break;
    }
    return sigmoid(theta);
}

size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* ---------------- baseline ---------------- */

#include <string.h>

#include "rec.h"

struct eval_baseline {
    char **ids;                  /* open addressing, power-of-two capacity */
    struct eval_sample_set *sets;
    size_t cap, count;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static size_t slot_of(const struct eval_baseline *b, const char *id, size_t n, bool *found)
{
    size_t i = hash_bytes(id, n) & (b->cap - 1);
    while (b->ids[i]) {
        if (strlen(b->ids[i]) == n && !memcmp(b->ids[i], id, n))
            return *found = true, i;
        i = (i + 1) & (b->cap - 1);
    }
    return *found = false, i;
}

static void baseline_grow(struct eval_baseline *b)
{
    struct eval_baseline old = *b;
    b->cap = old.cap ? old.cap * 2 : 1024;
    b->ids = rl_calloc(b->cap, sizeof *b->ids);
    b->sets = rl_calloc(b->cap, sizeof *b->sets);
    for (size_t i = 0; i < old.cap; i++)
        if (old.ids[i]) {
            bool f;
            size_t s = slot_of(b, old.ids[i], strlen(old.ids[i]), &f);
            b->ids[s] = old.ids[i];
            b->sets[s] = old.sets[i];
        }
    free(old.ids);
    free(old.sets);
}

int eval_lengths(const struct rec *r, size_t n, struct dvec *out, bool *tokens)
{
    struct mpv ids, e;
    out->n = 0;
    int k = rec_get_array(r, "response_ids", &ids);
    if (k < 0)
        return -1;
    if (k == 1) {
        if (ids.v.c.count != n)
            return rec_err(r, "field \"response_ids\" has %u lists for %zu rewards", ids.v.c.count, n);
        struct mpv_iter it = mpv_iter_array(&ids);
        while (mpv_next(&it, &e)) {
            if (e.type != MPV_ARRAY)
                return rec_err(r, "field \"response_ids\" holds %s, expected arrays of ids", mpv_type_name(e.type));
            dvec_push(out, e.v.c.count);
        }
        *tokens = true;
        return 0;
    }
    struct mpv resp;
    if ((k = rec_get_array(r, "responses", &resp)) <= 0)
        return k < 0 ? -1 : (*tokens = false, 0);   /* no lengths at all */
    if (resp.v.c.count != n)
        return rec_err(r, "field \"responses\" has %u texts for %zu rewards", resp.v.c.count, n);
    struct mpv_iter it = mpv_iter_array(&resp);
    while (mpv_next(&it, &e)) {
        if (e.type != MPV_STR)
            return rec_err(r, "field \"responses\" holds %s, expected strings", mpv_type_name(e.type));
        dvec_push(out, (double)utf8_chars(e.v.str.s, e.v.str.n));
    }
    *tokens = false;
    return 0;
}

static int baseline_add(struct eval_baseline *b, const struct rec *r, const char *reward_field)
{
    struct rec_str id;
    double *rw = NULL;
    size_t n = 0, cap = 0;
    int k = rec_get_f64s(r, reward_field, &rw, &n, &cap);
    if (k <= 0)
        return free(rw), k;
    if ((k = rec_get_str(r, "id", &id)) <= 0)
        return free(rw), k < 0 ? -1 : rec_err(r, "a baseline record needs an \"id\"");
    if (2 * (b->count + 1) > b->cap)
        baseline_grow(b);
    bool found;
    size_t s = slot_of(b, id.s, id.n, &found);
    if (found)
        return free(rw), rec_err(r, "id \"%.*s\" appears twice in the baseline", (int)id.n, id.s);
    struct dvec len = {0};
    bool tokens = false;
    if (eval_lengths(r, n, &len, &tokens))
        return free(rw), dvec_free(&len), -1;
    b->ids[s] = strndup(id.s, id.n);
    b->sets[s] = (struct eval_sample_set){rw, len.n ? len.v : NULL, n, tokens};
    if (!len.n)
        free(len.v);
    b->count++;
    return 1;
}

struct eval_baseline *eval_baseline_load(const char *path, const char *reward_field)
{
    struct rec_reader *r = rec_reader_open(path);
    if (!r)
        return NULL;
    struct eval_baseline *b = rl_calloc(1, sizeof *b);
    baseline_grow(b);
    struct rec rec;
    int k;
    while ((k = rec_next(r, &rec)) == 1)
        if (baseline_add(b, &rec, reward_field) < 0) {
            k = -1;
            break;
        }
    rec_reader_close(r);
    if (k < 0) {
        eval_baseline_free(b);
        return rl_err_prefix("baseline"), NULL;
    }
    return b;
}

const struct eval_sample_set *eval_baseline_find(const struct eval_baseline *b, const char *id, size_t n)
{
    bool found;
    size_t s = slot_of(b, id, n, &found);
    return found ? &b->sets[s] : NULL;
}

void eval_baseline_free(struct eval_baseline *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->cap; i++)
        if (b->ids[i]) {
            free(b->ids[i]);
            free(b->sets[i].reward);
            free(b->sets[i].length);
        }
    free(b->ids);
    free(b->sets);
    free(b);
}
