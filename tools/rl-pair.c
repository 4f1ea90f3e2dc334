/* rl-pair: one prompt's scored samples -> preference pairs (best vs worst by
 * default, the paper's choice). See man/rl-pair.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "pairs.h"
#include "rec.h"

static const char usage[] =
    "Usage: rl-pair [OPTION]... [FILE]...\n"
    "Turn scored generation records (responses + rewards) into preference pair\n"
    "records (chosen, rejected). Reads FILEs or stdin, writes a record stream.\n"
    "\n"
    "  -M, --mode MODE       max-min (default: best vs worst), max-random, max-max\n"
    "                        (best vs second best), random, all (every ordered pair)\n"
    "      --len-penalty L   rank by reward - L * (response length in tokens)\n"
    "      --min-margin M    drop pairs whose score gap is below M (default 0)\n"
    "      --seed S          seed of the random modes (default 0)\n"
    "      --annotate T      simulated annotators: a random pair of different responses,\n"
    "                        the first chosen with probability sigmoid((r1 - r2) / T)\n"
    "  -L, --level N         zstd level of the output (0 = raw msgpack; default 3)\n"
    "      --force           write the stream even to a terminal\n"
    "  -q, --quiet           no summary on stderr\n"
    "  -h, --help            show this help\n";

struct pair_tool_opts {
    struct pair_opts pair;
    int level;
    bool force, quiet;
};

/* Why records produced no pair, for the summary. */
struct pair_stats {
    uint64_t records, pairs, ties, too_few, no_rewards;
};

struct candidates {           /* one record's responses, reused across records */
    struct rec_str *text;
    double *reward;
    size_t *length;
    struct mpv *ids;
    struct pair *pairs;
    size_t n, cap_text, cap_reward, cap;
};

static struct pair_tool_opts parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, 0, 'M'}, {"len-penalty", required_argument, 0, 'P'},
        {"min-margin", required_argument, 0, 'G'}, {"seed", required_argument, 0, 'S'},
        {"annotate", required_argument, 0, 'A'},
        {"level", required_argument, 0, 'L'}, {"force", no_argument, 0, 'F'},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    struct pair_tool_opts o = {.pair = {.mode = PAIR_MAX_MIN}, .level = 3};
    int c, m;
    while ((c = getopt_long(argc, argv, "M:L:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'M':
            if ((m = pair_mode_parse(optarg)) < 0)
                rl_usage_error("--mode: unknown mode '%s' (max-min, max-random, max-max, random, all)", optarg);
            o.pair.mode = (enum pair_mode)m;
            break;
        case 'P': o.pair.len_penalty = cli_double("--len-penalty", optarg, -1e9, 1e9); break;
        case 'G': o.pair.min_margin = cli_double("--min-margin", optarg, 0, 1e300); break;
        case 'S': o.pair.seed = (uint64_t)cli_int("--seed", optarg, 0, INT64_MAX); break;
        case 'A': o.pair.annotate = cli_double("--annotate", optarg, 1e-9, 1e9); break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case 'F': o.force = true; break;
        case 'q': o.quiet = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    if (o.pair.annotate > 0 && (o.pair.min_margin > 0))
        rl_usage_error("--annotate labels pairs by chance: --min-margin does not apply");
    return o;
}

/* Read responses, rewards and (optional) response_ids. 1: ready, 0: skip (counted), -1: bad record. */
static int load_candidates(const struct rec *r, const struct pair_tool_opts *o, struct candidates *c,
                           struct pair_stats *st)
{
    size_t nr = 0;
    int k = rec_get_strs(r, "responses", &c->text, &c->n, &c->cap_text);
    if (k < 0)
        return -1;
    if (k == 0 || c->n < 2)
        return st->too_few++, 0;
    if ((k = rec_get_f64s(r, "rewards", &c->reward, &nr, &c->cap_reward)) <= 0)
        return k < 0 ? -1 : (st->no_rewards++, 0);
    if (nr != c->n)
        return rec_err(r, "field \"rewards\" has %zu values for %zu responses", nr, c->n);
    if (c->n > c->cap) {
        c->cap = c->n;
        c->length = rl_realloc(c->length, c->cap * sizeof *c->length);
        c->ids = rl_realloc(c->ids, c->cap * sizeof *c->ids);
        c->pairs = rl_realloc(c->pairs, c->cap * c->cap * sizeof *c->pairs);
    }
    struct mpv ids, e;
    if ((k = rec_get_array(r, "response_ids", &ids)) < 0)
        return -1;
    if (k == 0) {
        if (o->pair.len_penalty)
            return rec_err(r, "--len-penalty needs \"response_ids\" (lengths in tokens)");
        for (size_t i = 0; i < c->n; i++)
            c->ids[i].type = MPV_NIL;
        return 1;
    }
    if (ids.v.c.count != c->n)
        return rec_err(r, "field \"response_ids\" has %u lists for %zu responses", ids.v.c.count, c->n);
    struct mpv_iter it = mpv_iter_array(&ids);
    for (size_t i = 0; mpv_next(&it, &e); i++) {
        if (e.type != MPV_ARRAY)
            return rec_err(r, "field \"response_ids\"[%zu] is %s, expected an array of ids", i, mpv_type_name(e.type));
        c->ids[i] = e;
        c->length[i] = e.v.c.count;
    }
    return 1;
}

static const char *const per_response[] = {"responses", "response_ids", "rewards", "finish", "logps", "ref_logps"};

static int write_pair(struct rec_writer *w, const struct rec *r, const struct candidates *c, struct pair p,
                      bool many)
{
    rec_begin(w, r);
    for (size_t i = 0; i < sizeof per_response / sizeof *per_response; i++)
        rec_drop(w, per_response[i]);
    if (many) {                      /* ids stay unique: "<id>:<chosen>-<rejected>" */
        struct rec_str id = {"", 0};
        if (rec_get_str(r, "id", &id) < 0)
            return -1;
        char buf[64];
        int n = snprintf(buf, sizeof buf, ":%zu-%zu", p.chosen, p.rejected);
        msgpack_packer *pk = rec_put(w, "id");
        msgpack_pack_str(pk, id.n + (size_t)n);
        msgpack_pack_str_body(pk, id.s, id.n);
        msgpack_pack_str_body(pk, buf, (size_t)n);
        rec_put_str(w, "source_id", id.s, id.n);
    }
    rec_put_str(w, "chosen", c->text[p.chosen].s, c->text[p.chosen].n);
    rec_put_str(w, "rejected", c->text[p.rejected].s, c->text[p.rejected].n);
    if (c->ids[p.chosen].type == MPV_ARRAY) {
        rec_put_raw(w, "chosen_ids", &c->ids[p.chosen]);
        rec_put_raw(w, "rejected_ids", &c->ids[p.rejected]);
    }
    rec_put_f64(w, "chosen_reward", c->reward[p.chosen]);
    rec_put_f64(w, "rejected_reward", c->reward[p.rejected]);
    rec_put_f64(w, "margin", c->reward[p.chosen] - c->reward[p.rejected]);
    rec_put_i64(w, "chosen_index", (int64_t)p.chosen);
    rec_put_i64(w, "rejected_index", (int64_t)p.rejected);
    return rec_end(w);
}

struct pair_run {
    const struct pair_tool_opts *o;
    struct candidates c;
    struct rec_writer *w;
    struct pair_stats st;
};

static int pair_record(void *ctx, const struct rec *r)
{
    struct pair_run *run = ctx;
    const struct pair_tool_opts *o = run->o;
    struct candidates *c = &run->c;
    struct rec_writer *w = run->w;
    struct pair_stats *st = &run->st;
    st->records++;
    int k = load_candidates(r, o, c, st);
    if (k <= 0)
        return k;
    struct rec_str id = {"", 0};
    if (rec_get_str(r, "id", &id) < 0)
        return -1;
    struct pair_input in = {c->n, c->text, c->reward, c->length, id.s, id.n};
    size_t np = pairs_choose(&o->pair, &in, c->pairs);
    if (!np)
        st->ties++;
    for (size_t i = 0; i < np; i++)
        if (write_pair(w, r, c, c->pairs[i], o->pair.mode == PAIR_ALL))
            return -1;
    st->pairs += np;
    return 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct pair_tool_opts o = parse_args(argc, argv);
    if (rl_refuse_tty(STDOUT_FILENO, o.force))
        rl_die_err();
    struct pair_run run = {.o = &o, .w = rec_writer_open(STDOUT_FILENO, o.level, "stdout")};
    int rc = rec_writer_finish(run.w, rec_each(argc - optind, argv + optind, run.w, pair_record, &run));
    const struct pair_stats st = run.st;
    if (!o.quiet)
        fprintf(stderr, "%s: %llu records read, %llu pairs written (%s); dropped: %llu ties or identical "
                "responses, %llu with fewer than two responses, %llu without rewards\n", rl_prog,
                (unsigned long long)st.records, (unsigned long long)st.pairs,
                o.pair.annotate > 0 ? "annotated" : pair_mode_name(o.pair.mode),
                (unsigned long long)st.ties, (unsigned long long)st.too_few, (unsigned long long)st.no_rewards);
    if (rc)
        rl_die_err();
    struct candidates *c = &run.c;
    free(c->text); free(c->reward); free(c->length); free(c->ids); free(c->pairs);
    return 0;
}
