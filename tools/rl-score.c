/* rl-score: Bradley-Terry rewards for every response (or both sides of a
 * pair) with a reward model. See man/rl-score.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "fsutil.h"
#include "rec.h"
#include "rm.h"
#include "tokrule.h"

static const char usage[] =
    "Usage: rl-score -m RM_DIR [OPTION]... [FILE]...\n"
    "Add rewards from a reward model (LlamaForSequenceClassification and relatives, one\n"
    "label): \"rewards\" [n] to generation records (responses), or \"chosen_reward\" and\n"
    "\"rejected_reward\" to pair records (chosen, rejected).\n"
    "\n"
    "  -m, --model DIR        the reward model\n"
    "  -b, --batch N          sequences per forward pass (default 16)\n"
    "      --max-length N     longer sequences lose tokens on the left (default: the\n"
    "                         model's max_position_embeddings)\n"
    "      --template NAME    chat template for records with messages\n"
    "      --device D         auto (default: $RL_DEVICE, else cuda on a GPU, else cpu), cpu, cuda\n"
    "  -L, --level N          zstd level of the output (0: raw msgpack; default 3)\n"
    "      --force            write the stream even to a terminal\n"
    "  -q, --quiet            no progress or summary on stderr\n"
    "  -h, --help             show this help\n";

struct score_opts {
    const char *model_dir, *template_name, *device;
    int batch, max_length, level;
    bool force, quiet;
};

/* A record waiting for its sequences' scores. */
struct pending {
    uint8_t *raw;
    struct rec rec;
    bool pair;
    int first, n;              /* its sequences in the batch */
};

struct scorer {
    const struct score_opts *o;
    struct model *m;
    struct tok_ctx tc;
    struct rec_writer *w;
    struct pending *recs;
    size_t nrec, cap_rec;
    struct tok_ids tokens;     /* all sequences of the batch, back to back */
    int *len;
    double *score;
    size_t nseq, cap_seq;
    struct tok_ids prompt, resp;
    uint64_t truncated, records, seqs;
    struct progress progress;
};

static struct score_opts parse_args(int argc, char **argv)
{
    enum { O_MAXLEN = 256, O_TEMPLATE, O_DEVICE, O_FORCE };
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'}, {"batch", required_argument, 0, 'b'},
        {"max-length", required_argument, 0, O_MAXLEN}, {"template", required_argument, 0, O_TEMPLATE},
        {"device", required_argument, 0, O_DEVICE}, {"level", required_argument, 0, 'L'},
        {"force", no_argument, 0, O_FORCE}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct score_opts o = {.batch = 16, .level = 3, .device = "auto"};
    int c;
    while ((c = getopt_long(argc, argv, "m:b:L:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model_dir = optarg; break;
        case 'b': o.batch = (int)cli_int("--batch", optarg, 1, 1 << 16); break;
        case O_MAXLEN: o.max_length = (int)cli_int("--max-length", optarg, 2, 1 << 24); break;
        case O_TEMPLATE: o.template_name = optarg; break;
        case O_DEVICE: o.device = optarg; break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case O_FORCE: o.force = true; break;
        case 'q': o.quiet = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option");
        }
    }
    if (!o.model_dir)
        rl_usage_error("-m RM_DIR is required");
    return o;
}

static void add_sequence(struct scorer *s, const struct tok_ids *prompt, const struct tok_ids *resp)
{
    int sp, sr;
    rm_fit_left((int)prompt->n, (int)resp->n, s->o->max_length, &sp, &sr);
    s->truncated += sp + sr > 0;
    if (s->nseq == s->cap_seq) {
        s->cap_seq = s->cap_seq ? 2 * s->cap_seq : 64;
        s->len = rl_realloc(s->len, s->cap_seq * sizeof *s->len);
        s->score = rl_realloc(s->score, s->cap_seq * sizeof *s->score);
    }
    for (size_t i = (size_t)sp; i < prompt->n; i++)
        tok_ids_push(&s->tokens, prompt->v[i]);
    for (size_t i = (size_t)sr; i < resp->n; i++)
        tok_ids_push(&s->tokens, resp->v[i]);
    s->len[s->nseq++] = (int)(prompt->n - (size_t)sp + resp->n - (size_t)sr);
}

/* The record's sequences: one per response, or chosen then rejected. */
static int add_record(struct scorer *s, const struct rec *r, struct pending *p)
{
    struct mpv resp;
    const char *field = rec_has(r, "responses") || !rec_has(r, "response_ids") ? "responses" : "response_ids";
    int k = rec_get(r, field, &resp);
    p->pair = k == 0;
    p->first = (int)s->nseq;
    if (k == 1 && resp.type != MPV_ARRAY)
        return rec_type_error(r, field, &resp, strcmp(field, "responses") ? "an array of id lists" : "an array of strings");
    if (k == 1 && resp.v.c.count == 0)
        return rec_err(r, "field \"%s\" is empty: nothing to score", field);
    if (p->pair && !(rec_has(r, "chosen") || rec_has(r, "chosen_ids")))
        return rec_err(r, "neither \"responses\" (generation record) nor \"chosen\"/\"rejected\" (pair record)");
    s->prompt.n = 0;
    if (tok_ctx_prompt(&s->tc, r, &s->prompt))
        return -1;
    p->n = p->pair ? 2 : (int)resp.v.c.count;
    for (int j = 0; j < p->n; j++) {
        s->resp.n = 0;
        int rc = p->pair ? tok_ctx_response(&s->tc, r, j ? "rejected_ids" : "chosen_ids", j ? "rejected" : "chosen", &s->resp)
                         : tok_ctx_response_at(&s->tc, r, "response_ids", "responses", (size_t)j, &s->resp);
        if (rc)
            return -1;
        if (!s->prompt.n && !s->resp.n)
            return rec_err(r, "sequence %d is empty: nothing to score", j);
        add_sequence(s, &s->prompt, &s->resp);
    }
    return 0;
}

/* Score every pending sequence, write the records in order, and flush. */
static int flush_batch(struct scorer *s)
{
    for (size_t i = 0, tok = 0; i < s->nseq;) {
        size_t n = s->nseq - i < (size_t)s->o->batch ? s->nseq - i : (size_t)s->o->batch, ntok = 0;
        for (size_t k = 0; k < n; k++)
            ntok += (size_t)s->len[i + k];
        if (rm_score(s->m, (int)n, s->len + i, s->tokens.v + tok, s->score + i))
            return -1;
        i += n;
        tok += ntok;
        progress_add(&s->progress, 0, ntok);
    }
    for (size_t i = 0; i < s->nrec; i++) {
        struct pending *p = &s->recs[i];
        rec_begin(s->w, &p->rec);
        if (p->pair) {
            rec_put_f64(s->w, "chosen_reward", s->score[p->first]);
            rec_put_f64(s->w, "rejected_reward", s->score[p->first + 1]);
        } else {
            rec_put_f64s(s->w, "rewards", s->score + p->first, (size_t)p->n);
        }
        int rc = rec_end(s->w);
        free(p->raw);
        if (rc)
            return -1;
        progress_add(&s->progress, 1, 0);
    }
    s->seqs += s->nseq;
    s->nrec = s->nseq = s->tokens.n = 0;
    return rec_flush(s->w);
}

static int score_record(void *ctx, const struct rec *rec)
{
    struct scorer *s = ctx;
    if (s->nrec == s->cap_rec) {
        s->cap_rec = s->cap_rec ? 2 * s->cap_rec : 64;
        s->recs = rl_realloc(s->recs, s->cap_rec * sizeof *s->recs);
    }
    struct pending *p = &s->recs[s->nrec];
    if (add_record(s, rec, p))
        return -1;
    p->raw = rl_malloc(rec->size);            /* the record outlives the reader's buffer */
    memcpy(p->raw, rec->raw, rec->size);
    p->rec = *rec;
    p->rec.raw = p->raw;
    mpv_decode(p->raw, &p->rec.map);
    s->nrec++;
    s->records++;
    return s->nseq >= (size_t)s->o->batch ? flush_batch(s) : 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct score_opts o = parse_args(argc, argv);
    if (rl_refuse_tty(STDOUT_FILENO, o.force))
        rl_die_err();
    struct scorer s = {.o = &o};
    if (!(s.m = model_open(o.model_dir, o.device)) || rm_check(s.m, o.model_dir) ||
        tok_ctx_open(&s.tc, o.model_dir, &s.m->cfg, o.template_name))
        rl_die_err();
    if (!o.max_length)
        o.max_length = s.m->cfg.max_position_embeddings;
    s.w = rec_writer_open(STDOUT_FILENO, o.level, "stdout");
    progress_init(&s.progress, o.quiet, 0);
    int rc = rec_each(argc - optind, argv + optind, NULL, score_record, &s);
    char *err = rc ? rl_strdup(rl_errmsg()) : NULL;
    if (flush_batch(&s) && !err)                /* records read before an error still go out */
        err = rl_strdup(rl_errmsg());
    if (rec_writer_close(s.w) && !err)
        err = rl_strdup(rl_errmsg());
    progress_done(&s.progress);
    if (!o.quiet && s.truncated)
        rl_warn("%llu of %llu sequences were longer than %d tokens and lost tokens on the left",
                (unsigned long long)s.truncated, (unsigned long long)s.seqs, o.max_length);
    if (err)
        rl_die("%s", err);
    tok_ctx_close(&s.tc);
    model_close(s.m);
    free(s.recs); free(s.tokens.v); free(s.len); free(s.score); free(s.prompt.v); free(s.resp.v);
    return 0;
}
