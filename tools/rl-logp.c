/* rl-logp: add reference log-probs to pair and generation records, batched.
 * See man/rl-logp.1. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "model.h"
#include "rec.h"

static const char usage[] =
    "Usage: rl-logp -m DIR [OPTION]... [FILE]...\n"
    "Add reference log-probs (sums over response tokens, prompt masked) computed\n"
    "with the model in DIR: ref_chosen_logp and ref_rejected_logp to pair records\n"
    "(prompt_ids, chosen_ids, rejected_ids), ref_logps to generation records\n"
    "(prompt_ids, response_ids). Reads FILEs or stdin, writes a record stream.\n"
    "\n"
    "  -m, --model DIR       model directory (config.json, model.safetensors)\n"
    "  -b, --batch N         records per forward pass (default 8)\n"
    "      --device DEV      auto (default: $RL_DEVICE, else cuda on a GPU, else cpu), cpu, cuda\n"
    "  -L, --level N         zstd level of the output (0 = raw msgpack; default 3)\n"
    "      --force           write the stream even to a terminal\n"
    "  -q, --quiet           no progress or summary on stderr\n"
    "  -h, --help            show this help\n";

struct opts {
    const char *model, *device;
    int batch, level;
    bool force, quiet;
};

static struct opts parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'}, {"batch", required_argument, 0, 'b'},
        {"device", required_argument, 0, 'D'}, {"level", required_argument, 0, 'L'},
        {"force", no_argument, 0, 'F'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    struct opts o = {.device = "auto", .batch = 8, .level = 3};
    int c;
    while ((c = getopt_long(argc, argv, "m:b:L:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'b': o.batch = (int)cli_int("--batch", optarg, 1, 1 << 16); break;
        case 'D': o.device = optarg; break;
        case 'L': o.level = (int)cli_int("--level", optarg, -7, 19); break;
        case 'F': o.force = true; break;
        case 'q': o.quiet = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: rl_usage_error("unknown option (see --help)");
        }
    }
    if (!o.model)
        rl_usage_error("-m DIR is required (the reference model)");
    return o;
}

/* A batch of records held until their log-probs are computed: raw bytes
 * copied (a record is valid only until the next rec_next) and the token ids
 * of each (prompt, response) sequence in one pool. */
struct held {
    size_t raw_off;
    struct rec rec;
    bool pair;
    int seq0, nseq;          /* its sequences in the batch */
};
struct batch {
    struct rl_buf raw;
    struct held *rec;
    int nrec, cap_rec;
    int *pool;               /* ids */
    size_t npool, cap_pool;
    size_t *p_off, *r_off;   /* per sequence: prompt and response offsets in pool */
    int *plen, *rlen, nseq, cap_seq;
    double *logp;
    int32_t *tmp;            /* scratch for rec_get_i32s */
    size_t ntmp, cap_tmp;
};

static size_t pool_add(struct batch *b, const int32_t *v, size_t n)
{
    if (b->npool + n > b->cap_pool) {
        b->cap_pool = (b->npool + n) * 2;
        b->pool = rl_realloc(b->pool, b->cap_pool * sizeof *b->pool);
    }
    size_t off = b->npool;
    for (size_t i = 0; i < n; i++)
        b->pool[off + i] = v[i];
    b->npool += n;
    return off;
}

static int check_ids(const struct rec *r, const char *what, const int32_t *v, size_t n, int vocab)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0 || v[i] >= vocab)
            return rec_err(r, "%s[%zu] = %d is outside the model's vocabulary [0, %d)", what, i, v[i], vocab);
    if (n > (1u << 24))
        return rec_err(r, "%s: %zu ids is too long", what, n);
    return 0;
}

static void add_seq(struct batch *b, size_t p_off, size_t plen, const int32_t *resp, size_t rlen)
{
    if (b->nseq == b->cap_seq) {
        b->cap_seq = b->cap_seq ? 2 * b->cap_seq : 64;
        b->p_off = rl_realloc(b->p_off, b->cap_seq * sizeof *b->p_off);
        b->r_off = rl_realloc(b->r_off, b->cap_seq * sizeof *b->r_off);
        b->plen = rl_realloc(b->plen, b->cap_seq * sizeof *b->plen);
        b->rlen = rl_realloc(b->rlen, b->cap_seq * sizeof *b->rlen);
        b->logp = rl_realloc(b->logp, b->cap_seq * sizeof *b->logp);
    }
    b->p_off[b->nseq] = p_off;
    b->plen[b->nseq] = (int)plen;
    b->r_off[b->nseq] = pool_add(b, resp, rlen);
    b->rlen[b->nseq++] = (int)rlen;
}

/* Take one record into the batch; -1 (rl_err naming the record) when it lacks ids. */
static int hold(struct batch *b, const struct rec *r, int vocab)
{
    bool has_chosen = rec_has(r, "chosen_ids"), has_rejected = rec_has(r, "rejected_ids");
    bool has_resp = rec_has(r, "response_ids");
    if (!has_chosen && !has_rejected && !has_resp)
        return rec_err(r, "no token ids: rl-logp needs \"prompt_ids\" with \"chosen_ids\" and "
                          "\"rejected_ids\" (pairs) or with \"response_ids\" (generations)");
    int k = rec_get_i32s(r, "prompt_ids", &b->tmp, &b->ntmp, &b->cap_tmp);
    if (k <= 0)
        return k < 0 ? -1 : rec_err(r, "field \"prompt_ids\" is missing (rl-logp needs token ids)");
    if (b->ntmp == 0)
        return rec_err(r, "field \"prompt_ids\" is empty: responses need a prompt to be conditioned on");
    if (check_ids(r, "prompt_ids", b->tmp, b->ntmp, vocab) < 0)
        return -1;
    size_t plen = b->ntmp, p_off = pool_add(b, b->tmp, plen);
    struct held h = {.raw_off = b->raw.len, .rec = *r, .pair = !has_resp, .seq0 = b->nseq};
    if (h.pair) {
        static const char *const keys[2] = {"chosen_ids", "rejected_ids"};
        for (int i = 0; i < 2; i++) {
            if ((k = rec_get_i32s(r, keys[i], &b->tmp, &b->ntmp, &b->cap_tmp)) <= 0)
                return k < 0 ? -1 : rec_err(r, "field \"%s\" is missing (pair records need both)", keys[i]);
            if (check_ids(r, keys[i], b->tmp, b->ntmp, vocab) < 0)
                return -1;
            add_seq(b, p_off, plen, b->tmp, b->ntmp);
        }
    } else {
        struct mpv list, e;
        if ((k = rec_get_array(r, "response_ids", &list)) < 0)
            return -1;
        struct mpv_iter it = mpv_iter_array(&list);
        char what[48];
        for (int i = 0; mpv_next(&it, &e); i++) {
            snprintf(what, sizeof what, "response_ids[%d]", i);
            if (rec_as_i32s(r, what, &e, &b->tmp, &b->ntmp, &b->cap_tmp) < 0 ||
                check_ids(r, what, b->tmp, b->ntmp, vocab) < 0)
                return -1;
            add_seq(b, p_off, plen, b->tmp, b->ntmp);
        }
    }
    h.nseq = b->nseq - h.seq0;
    rl_buf_put(&b->raw, r->raw, r->size);
    if (b->nrec == b->cap_rec) {
        b->cap_rec = b->cap_rec ? 2 * b->cap_rec : 16;
        b->rec = rl_realloc(b->rec, b->cap_rec * sizeof *b->rec);
    }
    b->rec[b->nrec++] = h;
    return 0;
}

/* Compute the batch's log-probs and write its records, in input order. */
static int run_batch(struct model *m, struct batch *b, struct rec_writer *w, uint64_t *tokens)
{
    if (b->nrec == 0)
        return 0;
    const int **pp = rl_malloc((b->nseq + 1) * sizeof *pp), **rp = rl_malloc((b->nseq + 1) * sizeof *rp);
    for (int s = 0; s < b->nseq; s++) {
        pp[s] = b->pool + b->p_off[s];
        rp[s] = b->pool + b->r_off[s];
        *tokens += (uint64_t)b->plen[s] + b->rlen[s];
    }
    int rc = model_response_logps(m, b->nseq, pp, b->plen, rp, b->rlen, b->logp);
    free(pp);
    free(rp);
    if (rc < 0)
        return rec_err(&b->rec[0].rec, "batch starting here: %s", rl_errmsg());
    for (int i = 0; i < b->nrec && rc == 0; i++) {
        struct held *h = &b->rec[i];
        h->rec.raw = (const uint8_t *)b->raw.data + h->raw_off;
        mpv_decode(h->rec.raw, &h->rec.map);          /* re-point the map at the copy */
        rec_begin(w, &h->rec);
        if (h->pair) {
            rec_put_f64(w, "ref_chosen_logp", b->logp[h->seq0]);
            rec_put_f64(w, "ref_rejected_logp", b->logp[h->seq0 + 1]);
        } else {
            rec_put_f64s(w, "ref_logps", b->logp + h->seq0, (size_t)h->nseq);
        }
        rc = rec_end(w);
    }
    if (rc == 0)
        rc = rec_flush(w);
    b->nrec = b->nseq = 0;
    b->npool = 0;
    b->raw.len = 0;
    return rc;
}

static int flush_batch(struct model *m, struct batch *b, struct rec_writer *w, uint64_t *tokens,
                       struct progress *pr)
{
    uint64_t t0 = *tokens;
    int n = b->nrec;
    if (run_batch(m, b, w, tokens) < 0)
        return -1;
    progress_add(pr, (uint64_t)n, *tokens - t0);
    return 0;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    struct opts o = parse_args(argc, argv);
    if (rl_refuse_tty(STDOUT_FILENO, o.force))
        rl_die_err();
    struct model *m = model_open(o.model, o.device);
    if (!m)
        rl_die_err();
    if (m->cfg.head != HEAD_LM)
        rl_die("%s: a %s has no language-model head to compute log-probs with", o.model, m->cfg.architecture);
    struct rec_writer *w = rec_writer_open(STDOUT_FILENO, o.level, "stdout");
    struct batch b = {0};
    struct progress pr;
    progress_init(&pr, o.quiet, 0);
    char *stdin_only[] = {"-"};
    char **inputs = optind < argc ? argv + optind : stdin_only;
    int ninputs = optind < argc ? argc - optind : 1, failed = 0;
    uint64_t records = 0, tokens = 0;
    for (int i = 0; i < ninputs && !failed; i++) {
        struct rec_reader *r = rec_reader_open(inputs[i]);
        if (!r) {
            failed = 1;
            break;
        }
        struct rec rec;
        int k;
        while ((k = rec_next(r, &rec)) == 1) {
            if (hold(&b, &rec, m->V) < 0) {
                /* the records before this one are complete: write them first */
                char *err = rl_strdup(rl_errmsg());
                run_batch(m, &b, w, &tokens);
                rl_err("%s", err);
                free(err);
                k = -1;
                break;
            }
            records++;
            if (b.nrec >= o.batch && flush_batch(m, &b, w, &tokens, &pr) < 0) {
                k = -1;
                break;
            }
        }
        if (k == 0 && flush_batch(m, &b, w, &tokens, &pr) < 0)   /* batches end with their input */
            k = -1;
        failed = k < 0;
        rec_reader_close(r);
    }
    progress_done(&pr);
    char *err = failed ? rl_strdup(rl_errmsg()) : NULL;
    if (rec_writer_close(w) && !err)
        err = rl_strdup(rl_errmsg());
    if (!o.quiet && !err && isatty(STDERR_FILENO))
        fprintf(stderr, "%s: %llu records, %llu tokens\n", rl_prog, (unsigned long long)records,
                (unsigned long long)tokens);
    model_close(m);
    free(b.raw.data);
    free(b.rec);
    free(b.pool);
    free(b.p_off);
    free(b.r_off);
    free(b.plen);
    free(b.rlen);
    free(b.logp);
    free(b.tmp);
    if (err)
        rl_die("%s", err);
    return 0;
}
