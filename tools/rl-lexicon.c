/* rl-lexicon: a rule-based reward filter: lexicon weights of the words of
 * each response, minus a length penalty. See man/rl-lexicon.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "lexicon.h"
#include "rec.h"

static const char usage[] =
    "Usage: rl-lexicon -l LEXICON.tsv [OPTION]... [FILE]...\n"
    "Add to generation records one reward per response: the sum of the lexicon weights\n"
    "of its words, minus --length-penalty per word beyond --target-words.\n"
    "\n"
    "  -l, --lexicon FILE        TSV: word, weight (further columns ignored)\n"
    "  -f, --field NAME          the field to write (default: rewards)\n"
    "      --length-penalty P    per word beyond --target-words (default 0)\n"
    "      --target-words N      default 0\n"
    "      --mean                divide the sum by the number of words\n"
    "  -L, --level N             zstd level of the output (0: raw msgpack; default 3)\n"
    "      --force               write the stream even to a terminal\n"
    "  -h, --help                show this help\n";

struct lex_opts {
    const char *lexicon, *field;
    double penalty;
    long target;
    bool mean, force;
    int level;
};

static struct lex_opts parse_args(int argc, char **argv)
{
    enum { O_PEN = 256, O_TARGET, O_MEAN, O_FORCE };
    static const struct option longopts[] = {
        {"lexicon", required_argument, 0, 'l'}, {"field", required_argument, 0, 'f'},
        {"length-penalty", required_argument, 0, O_PEN}, {"target-words", required_argument, 0, O_TARGET},
        {"mean", no_argument, 0, O_MEAN}, {"level", required_argument, 0, 'L'},
        {"force", no_argument, 0, O_FORCE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    struct lex_opts o = {.field = "rewards", .level = 3};
    int c;
    while ((c = getopt_long(argc, argv, "l:f:L:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': o.lexicon = optarg; break;
        case 'f': o.field = optarg; break;
        case O_PEN: o.penalty = cli_double("--length-penalty", optarg, -1e9, 1e9); break;
        case O_TARGET: o.target = cli_int("--target-words", optarg, 0, 1 << 30); break;
        case O_MEAN: o.mean = true; break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case O_FORCE: o.force = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    if (!o.lexicon)
        rl_usage_error("-l LEXICON.tsv is required");
    return o;
}

struct lex_run {                 /* a run's state, with scratch reused across records */
    const struct lexicon *lex;
    const struct lex_opts *o;
    struct rec_writer *w;
    struct rec_str *texts;
    double *rw;
    size_t cap, rcap;
};

static int score_record(void *ctx, const struct rec *r)
{
    struct lex_run *s = ctx;
    const struct lexicon *lex = s->lex;
    const struct lex_opts *o = s->o;
    struct rec_writer *w = s->w;
    struct rec_str **texts = &s->texts;
    double **rw = &s->rw;
    size_t *cap = &s->cap, *rcap = &s->rcap;
    size_t n;
    int k = rec_get_strs(r, "responses", texts, &n, cap);
    if (k <= 0)
        return k < 0 ? -1 : rec_err(r, "no \"responses\" to score");
    if (n > *rcap) {
        *rcap = n;
        *rw = rl_realloc(*rw, n * sizeof **rw);
    }
    for (size_t j = 0; j < n; j++) {
        struct lexicon_score s;
        lexicon_score(lex, (*texts)[j].s, (*texts)[j].n, &s);
        double over = (double)s.words - (double)o->target;
        (*rw)[j] = (o->mean ? s.sum / (double)(s.words ? s.words : 1) : s.sum) - o->penalty * (over > 0 ? over : 0);
    }
    rec_begin(w, r);
    rec_put_f64s(w, o->field, *rw, n);
    return rec_end(w);
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct lex_opts o = parse_args(argc, argv);
    if (rl_refuse_tty(STDOUT_FILENO, o.force))
        rl_die_err();
    struct lexicon *lex = lexicon_load(o.lexicon);
    if (!lex)
        rl_die_err();
    struct lex_run run = {lex, &o, rec_writer_open(STDOUT_FILENO, o.level, "stdout"), NULL, NULL, 0, 0};
    int rc = rec_each(argc - optind, argv + optind, run.w, score_record, &run);
    if (rec_writer_finish(run.w, rc))
        rl_die_err();
    free(run.texts);
    free(run.rw);
    lexicon_free(lex);
    return 0;
}
