/* rl-eval: statistics of scored generations and pairs, by group, optionally
 * against a baseline. See man/rl-eval.1. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "eval.h"
#include "json.h"
#include "rec.h"

static const char usage[] =
    "Usage: rl-eval [OPTION]... [FILE]...\n"
    "Report reward statistics of scored generation records (rewards per response)\n"
    "and the accuracy of scored pair records (chosen_reward, rejected_reward).\n"
    "\n"
    "  -b, --baseline FILE     win rate and length-controlled win rate against the\n"
    "                          scored records of FILE, matched by id\n"
    "  -B, --by FIELD          one group per value of FIELD (e.g. iter)\n"
    "  -r, --reward-field F    the rewards to evaluate (default: rewards)\n"
    "  -f, --format FMT        table (default), json (JSON Lines) or msgpack (a stream)\n"
    "  -p, --plot FILE.png     draw the per-group reward means with gnuplot\n"
    "  -L, --level N           zstd level for --format msgpack (default 3)\n"
    "      --force             write msgpack even to a terminal\n"
    "  -h, --help              show this help\n";

enum format { FMT_TABLE, FMT_JSON, FMT_MSGPACK };

struct eval_opts {
    const char *baseline, *by, *reward_field, *plot;
    enum format format;
    int level;
    bool force;
};

struct eval_state {
    const struct eval_opts *o;
    struct eval_baseline *base;
    struct eval_group *groups;
    size_t ngroups;
    uint64_t unmatched, unscored;
    /* scratch reused across records */
    double *rw, *logp, *ref;
    size_t cap_rw, cap_logp, cap_ref;
    struct dvec len;
};

static struct eval_opts parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"baseline", required_argument, 0, 'b'}, {"by", required_argument, 0, 'B'},
        {"reward-field", required_argument, 0, 'r'}, {"format", required_argument, 0, 'f'},
        {"plot", required_argument, 0, 'p'}, {"level", required_argument, 0, 'L'},
        {"force", no_argument, 0, 'F'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    struct eval_opts o = {.reward_field = "rewards", .level = 3};
    int c;
    while ((c = getopt_long(argc, argv, "b:B:r:f:p:L:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': o.baseline = optarg; break;
        case 'B': o.by = optarg; break;
        case 'r': o.reward_field = optarg; break;
        case 'f':
            if (!strcmp(optarg, "table")) o.format = FMT_TABLE;
            else if (!strcmp(optarg, "json")) o.format = FMT_JSON;
            else if (!strcmp(optarg, "msgpack")) o.format = FMT_MSGPACK;
            else rl_usage_error("--format: '%s' is not table, json or msgpack", optarg);
            break;
        case 'p': o.plot = optarg; break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case 'F': o.force = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    return o;
}

/* The group of a record: its --by value as JSON text ("all" without --by). */
static struct eval_group *group_of(struct eval_state *s, const struct rec *r)
{
    struct rl_buf key = {0};
    struct mpv v;
    if (!s->o->by)
        rl_buf_put(&key, "all", 3);
    else if (rec_get(r, s->o->by, &v) == 1) {
        if (mpv_to_json(&v, &key))
            return rec_err(r, "field \"%s\": %s", s->o->by, rl_errmsg()), rl_buf_free(&key), NULL;
    } else
        rl_buf_put(&key, "null", 4);
    rl_buf_putc(&key, 0);
    for (size_t i = 0; i < s->ngroups; i++)
        if (!strcmp(s->groups[i].key, key.data))
            return rl_buf_free(&key), &s->groups[i];
    s->groups = rl_realloc(s->groups, (s->ngroups + 1) * sizeof *s->groups);
    s->groups[s->ngroups] = (struct eval_group){.key = key.data};
    return &s->groups[s->ngroups++];
}

static int add_finish(struct eval_group *g, const struct rec *r)
{
    struct rec_str *f = NULL;
    size_t n = 0, cap = 0;
    int k = rec_get_strs(r, "finish", &f, &n, &cap);
    for (size_t i = 0; k == 1 && i < n; i++) {
        if (f[i].n == 4 && !memcmp(f[i].s, "stop", 4)) g->finish_stop++;
        else if (f[i].n == 6 && !memcmp(f[i].s, "length", 6)) g->finish_length++;
        else g->finish_other++;
    }
    free(f);
    return k < 0 ? -1 : 0;
}

static int add_kl(struct eval_state *s, struct eval_group *g, const struct rec *r, size_t n)
{
    size_t nl = 0, nr = 0;
    int a = rec_get_f64s(r, "logps", &s->logp, &nl, &s->cap_logp);
    int b = rec_get_f64s(r, "ref_logps", &s->ref, &nr, &s->cap_ref);
    if (a < 0 || b < 0)
        return -1;
    if (a == 0 || b == 0)
        return 0;
    if (nl != n || nr != n)
        return rec_err(r, "\"logps\" (%zu) and \"ref_logps\" (%zu) must have one value per response (%zu)", nl, nr, n);
    for (size_t j = 0; j < n; j++)
        dvec_push(&g->kl, s->logp[j] - s->ref[j]);
    return 0;
}

static int add_baseline(struct eval_state *s, struct eval_group *g, const struct rec *r, size_t n, bool tokens)
{
    struct rec_str id;
    if (rec_get_str(r, "id", &id) <= 0)
        return s->unmatched++, 0;
    const struct eval_sample_set *b = eval_baseline_find(s->base, id.s, id.n);
    if (!b)
        return s->unmatched++, 0;
    bool lengths = s->len.n == n && b->length && b->tokens == tokens;
    for (size_t j = 0; j < n && j < b->n; j++) {
        double x = s->rw[j], y = b->reward[j];
        dvec_push(&g->win, x > y ? 1 : x == y ? 0.5 : 0);
        dvec_push(&g->len_gap, lengths ? s->len.v[j] - b->length[j] : 0);
    }
    return 0;
}

static int add_generation(struct eval_state *s, struct eval_group *g, const struct rec *r, size_t n)
{
    if (!n)
        return 0;
    double best = s->rw[0];
    for (size_t j = 0; j < n; j++) {
        dvec_push(&g->reward, s->rw[j]);
        if (s->rw[j] > best) best = s->rw[j];
    }
    g->samples += n;
    dvec_push(&g->first, s->rw[0]);
    dvec_push(&g->best, best);
    bool tokens = false;
    if (eval_lengths(r, n, &s->len, &tokens))
        return -1;
    for (size_t j = 0; j < s->len.n; j++)
        dvec_push(tokens ? &g->len_tokens : &g->len_chars, s->len.v[j]);
    if (tokens) {                            /* characters too, when the texts are there */
        struct rec_str *t = NULL;
        size_t nt = 0, cap = 0;
        if (rec_get_strs(r, "responses", &t, &nt, &cap) == 1 && nt == n)
            for (size_t j = 0; j < n; j++)
                dvec_push(&g->len_chars, (double)utf8_chars(t[j].s, t[j].n));
        free(t);
    }
    if (add_finish(g, r) || add_kl(s, g, r, n))
        return -1;
    return s->base ? add_baseline(s, g, r, n, tokens) : 0;
}

static int add_record(void *ctx, const struct rec *r)
{
    struct eval_state *s = ctx;
    struct eval_group *g = group_of(s, r);
    if (!g)
        return -1;
    g->records++;
    size_t n = 0;
    double c, rj;
    int k = rec_get_f64s(r, s->o->reward_field, &s->rw, &n, &s->cap_rw);
    if (k < 0)
        return -1;
    if (k == 1)
        return add_generation(s, g, r, n);
    int a = rec_get_f64(r, "chosen_reward", &c), b = rec_get_f64(r, "rejected_reward", &rj);
    if (a < 0 || b < 0)
        return -1;
    if (a == 1 && b == 1) {
        g->pairs++;
        g->pairs_correct += c > rj;
        g->pairs_tied += c == rj;
        dvec_push(&g->pair_margin, c - rj);
        return 0;
    }
    s->unscored++;
    return 0;
}

/* ---------------- report ---------------- */

struct metric { const char *name; double value; bool integer; };
#define MAX_METRICS 32

static size_t group_metrics(struct eval_group *g, struct metric *m)
{
    size_t k = 0;
    double nfin = (double)(g->finish_stop + g->finish_length + g->finish_other);
#define PUT(N, V, I) (m[k++] = (struct metric){N, V, I})
    PUT("records", (double)g->records, true);
    PUT("samples", g->samples ? (double)g->samples : NAN, true);
    PUT("reward_mean", dvec_mean(&g->reward), false);
    PUT("reward_median", dvec_median(&g->reward), false);
    PUT("reward_std", dvec_std(&g->reward), false);
    PUT("first_mean", dvec_mean(&g->first), false);
    PUT("first_median", dvec_median(&g->first), false);
    PUT("first_std", dvec_std(&g->first), false);
    PUT("best_of_n_mean", dvec_mean(&g->best), false);
    PUT("len_tokens_mean", dvec_mean(&g->len_tokens), false);
    PUT("len_chars_mean", dvec_mean(&g->len_chars), false);
    PUT("finish_stop", nfin ? g->finish_stop / nfin : NAN, false);
    PUT("finish_length", nfin ? g->finish_length / nfin : NAN, false);
    PUT("kl", dvec_mean(&g->kl), false);
    PUT("pairs", g->pairs ? (double)g->pairs : NAN, true);
    PUT("pair_accuracy", g->pairs ? (double)g->pairs_correct / g->pairs : NAN, false);
    PUT("pair_ties", g->pairs ? (double)g->pairs_tied : NAN, true);
    PUT("pair_margin_mean", dvec_mean(&g->pair_margin), false);
    PUT("baseline_samples", g->win.n ? (double)g->win.n : NAN, true);
    PUT("win_rate", dvec_mean(&g->win), false);
    PUT("lc_win_rate", eval_lc_win_rate(&g->win, &g->len_gap), false);
#undef PUT
    return k;
}

static double metric(const struct metric *m, size_t nm, const char *name)
{
    for (size_t i = 0; i < nm; i++)
        if (!strcmp(m[i].name, name))
            return m[i].value;
    return NAN;
}

static void fmt_value(char *buf, size_t n, const struct metric *m)
{
    if (isnan(m->value)) snprintf(buf, n, "-");
    else if (m->integer) snprintf(buf, n, "%.0f", m->value);
    else snprintf(buf, n, "%.4f", m->value);
}

/* A group's label in the table: strings without their JSON quotes. */
static const char *label(const char *key, char *buf, size_t n)
{
    size_t len = strlen(key);
    if (len >= 2 && key[0] == '"' && key[len - 1] == '"' && !memchr(key, '\\', len)) {
        snprintf(buf, n, "%.*s", (int)(len - 2), key + 1);
        return buf;
    }
    return key;
}

/* Metrics down, groups across: a handful of groups and many metrics read best so. */
static void print_table(struct eval_state *s)
{
    static struct metric m[64][MAX_METRICS];
    size_t ng = s->ngroups < 64 ? s->ngroups : 64, nm = 0;
    for (size_t i = 0; i < ng; i++)
        nm = group_metrics(&s->groups[i], m[i]);
    int w = 8;
    char lb[256];
    for (size_t i = 0; i < ng; i++)
        if ((int)strlen(label(s->groups[i].key, lb, sizeof lb)) + 2 > w)
            w = (int)strlen(label(s->groups[i].key, lb, sizeof lb)) + 2;
    printf("%-18s", s->o->by ? s->o->by : "");
    for (size_t i = 0; i < ng; i++)
        printf(" %*s", w, label(s->groups[i].key, lb, sizeof lb));
    printf("\n");
    for (size_t j = 0; j < nm; j++) {
        bool any = false;
        for (size_t i = 0; i < ng; i++) any |= !isnan(m[i][j].value);
        if (!any)
            continue;
        printf("%-18s", m[0][j].name);
        for (size_t i = 0; i < ng; i++) {
            char v[48];
            fmt_value(v, sizeof v, &m[i][j]);
            printf(" %*s", w, v);
        }
        printf("\n");
    }
    if (s->ngroups > ng)
        printf("(%zu more groups: use --format json)\n", s->ngroups - ng);
}

static void print_json(struct eval_state *s)
{
    struct metric m[MAX_METRICS];
    for (size_t i = 0; i < s->ngroups; i++) {
        size_t nm = group_metrics(&s->groups[i], m);
        printf("{");
        if (s->o->by)
            printf("\"%s\":%s,", s->o->by, s->groups[i].key);
        for (size_t j = 0; j < nm; j++) {
            char v[48];
            if (isnan(m[j].value)) snprintf(v, sizeof v, "null");
            else if (m[j].integer) snprintf(v, sizeof v, "%.0f", m[j].value);
            else json_fmt_double(m[j].value, v);
            printf("%s\"%s\":%s", j ? "," : "", m[j].name, v);
        }
        printf("}\n");
    }
}

static int write_msgpack(struct eval_state *s)
{
    if (rl_refuse_tty(STDOUT_FILENO, s->o->force))
        return -1;
    struct rec_writer *w = rec_writer_open(STDOUT_FILENO, s->o->level, "stdout");
    struct metric m[MAX_METRICS];
    for (size_t i = 0; i < s->ngroups; i++) {
        size_t nm = group_metrics(&s->groups[i], m);
        rec_begin(w, NULL);
        if (s->o->by)
            json_to_msgpack(s->groups[i].key, strlen(s->groups[i].key), rec_put(w, s->o->by));
        for (size_t j = 0; j < nm; j++) {
            if (isnan(m[j].value)) rec_put_nil(w, m[j].name);
            else if (m[j].integer) rec_put_i64(w, m[j].name, (int64_t)m[j].value);
            else rec_put_f64(w, m[j].name, m[j].value);
        }
        if (rec_end(w))
            return rec_writer_close(w), -1;
    }
    return rec_writer_close(w);
}

static int plot(struct eval_state *s, const char *png)
{
    char data[] = "/tmp/rl-eval-plot.XXXXXX";
    int fd = mkstemp(data);
    if (fd < 0)
        return rl_errno("--plot: cannot create a temporary file");
    FILE *f = fdopen(fd, "w");
    struct metric m[MAX_METRICS];
    for (size_t i = 0; i < s->ngroups; i++) {
        size_t nm = group_metrics(&s->groups[i], m);
        char lb[256];
        fprintf(f, "%zu \"%s\" %.17g %.17g %.17g\n", i, label(s->groups[i].key, lb, sizeof lb), metric(m, nm, "first_mean"),
                metric(m, nm, "reward_mean"), metric(m, nm, "best_of_n_mean"));
    }
    fclose(f);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "gnuplot -e \"set terminal pngcairo noenhanced size 800,500; set output '%s'; set grid; set key left top;"
             " set xlabel '%s'; set ylabel '%s'; set datafile missing 'nan'; set offsets 0.2, 0.2, 0, 0;"
             " plot '%s' using 1:3:xtic(2) with linespoints title 'first sample',"
             " '' using 1:4 with linespoints title 'mean of all samples',"
             " '' using 1:5 with linespoints title 'best of n'\"",
             png, s->o->by ? s->o->by : "group", s->o->reward_field, data);
    int rc = system(cmd);
    unlink(data);
    if (rc != 0)
        return rl_err("--plot: gnuplot failed (exit %d; is gnuplot installed? scripts/deps installs gnuplot-nox)", rc);
    return 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct eval_opts o = parse_args(argc, argv);
    struct eval_state s = {.o = &o};
    if (o.baseline && !(s.base = eval_baseline_load(o.baseline, o.reward_field)))
        rl_die_err();
    if (rec_each(argc - optind, argv + optind, NULL, add_record, &s))
        rl_die_err();
    if (s.unscored)
        rl_warn("%llu records had neither \"%s\" nor chosen_reward/rejected_reward", (unsigned long long)s.unscored, o.reward_field);
    if (s.unmatched)
        rl_warn("%llu records had no match in the baseline", (unsigned long long)s.unmatched);
    if (o.format == FMT_TABLE) print_table(&s);
    else if (o.format == FMT_JSON) print_json(&s);
    else if (write_msgpack(&s)) rl_die_err();
    if (fflush(stdout) != 0)
        rl_die("stdout: write failed");
    if (o.plot && plot(&s, o.plot))
        rl_die_err();
    for (size_t i = 0; i < s.ngroups; i++)
        eval_group_free(&s.groups[i]);
    free(s.groups); free(s.rw); free(s.logp); free(s.ref);
    dvec_free(&s.len);
    eval_baseline_free(s.base);
    return 0;
}
