#include "gen.h"

#include <jansson.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "err.h"
#include "fsutil.h"
#include "rng.h"

enum finish { RUNNING, STOPPED, LENGTH };

struct sample {
    struct tok_ids ids;
    struct rl_buf text;
    struct tok_stream ts;
    struct rng rng;
    double logp;
    enum finish finish;
};

struct job {                     /* one input record in flight */
    uint8_t *raw;
    struct rec rec;
    struct tok_ids prompt;
    uint64_t seed_id_hash;
    const char *id;
    size_t id_len;
    int started, done;
    struct sample *s;            /* n */
    float *head;                 /* the prompt's last logits, while samples wait to start */
};

/* A KV-cache slot: the sample it decodes (job NULL: free), and the job whose
 * prompt fills its first positions, which outlives the sample so that the
 * job's next sample can start there, or be forked from there, without
 * another prefill. */
struct slot { struct job *job, *prefix; int j, last; };

struct gen {
    struct model *m;
    struct tok_ctx *tc;
    const struct gen_opts *o;
    struct kv_cache *cache;
    struct slot *slot;
    struct job **jobs;           /* in flight, in input order */
    int cap, count;
    float *logits;
    int *step_slots, *step_tok, *ones;
    int *step_drawn;             /* a decode step's tokens and their log-probs */
    double *step_u, *step_logp;
    struct sample_scratch *scratch;   /* one per host thread that samples */
    int n_scratch;
    int32_t *stop;               /* all stop ids */
    int n_stop;
    size_t max_stop_len;
    struct gen_stats *st;
    struct progress progress;
    bool input_done;
    char *input_error;           /* a bad record: stop admitting, finish, then fail */
};

/* ---------------- stop ids ---------------- */

static void add_id(int32_t **ids, int *n, int32_t id)
{
    for (int i = 0; i < *n; i++)
        if ((*ids)[i] == id)
            return;
    *ids = rl_realloc(*ids, (size_t)(*n + 1) * sizeof **ids);
    (*ids)[(*n)++] = id;
}

int gen_model_stop_ids(const char *dir, const struct model_config *cfg, int32_t **ids, int *n)
{
    for (int i = 0; i < cfg->n_eos; i++)
        add_id(ids, n, cfg->eos_token_ids[i]);
    char path[FS_PATH_MAX];
    if (fs_join(path, sizeof path, dir, "generation_config.json") || !fs_exists(path))
        return 0;
    json_error_t e;
    json_t *g = json_load_file(path, 0, &e);
    if (!g)
        return rl_err("%s: line %d: %s", path, e.line, e.text);
    json_t *eos = json_object_get(g, "eos_token_id"), *v;
    size_t i;
    int rc = 0;
    if (json_is_integer(eos))
        add_id(ids, n, (int32_t)json_integer_value(eos));
    else if (json_is_array(eos))
        json_array_foreach(eos, i, v) {
            if (!json_is_integer(v)) {
                rc = rl_err("%s: eos_token_id[%zu] is not an integer", path, i);
                break;
            }
            add_id(ids, n, (int32_t)json_integer_value(v));
        }
    else if (eos && !json_is_null(eos))
        rc = rl_err("%s: eos_token_id must be an integer or a list of integers", path);
    json_decref(g);
    return rc;
}

/* ---------------- jobs ---------------- */

static void job_free(struct gen *g, struct job *j)
{
    for (int i = 0; i < g->o->n; i++) {
        free(j->s[i].ids.v);
        rl_buf_free(&j->s[i].text);
    }
    for (int i = 0; i < g->o->batch; i++)        /* no slot may name a freed job */
        if (g->slot[i].prefix == j)
            g->slot[i].prefix = NULL;
    free(j->s);
    free(j->head);
    free(j->raw);
    free(j->prompt.v);
    free(j);
}

/* A record into a job: its prompt ids (truncated to max_prompt) and id. */
static int job_init(struct gen *g, struct job *j, const struct rec *r)
{
    memset(j, 0, sizeof *j);
    struct rec_str id;
    int k = rec_get_str(r, "id", &id);
    if (k <= 0)
        return k < 0 ? -1 : rec_err(r, "no \"id\": every record needs a unique string id (it seeds its samples)");
    if (tok_ctx_prompt(g->tc, r, &j->prompt))
        return free(j->prompt.v), -1;
    if (!j->prompt.n)
        return free(j->prompt.v), rec_err(r, "the prompt is empty");
    if ((int)j->prompt.n > g->o->max_prompt) {
        if (g->o->strict) {
            free(j->prompt.v);
            return rec_err(r, "the prompt has %zu tokens, over --max-prompt-tokens %d", j->prompt.n, g->o->max_prompt);
        }
        size_t cut = j->prompt.n - (size_t)g->o->max_prompt;      /* keep its end */
        memmove(j->prompt.v, j->prompt.v + cut, (size_t)g->o->max_prompt * sizeof *j->prompt.v);
        j->prompt.n = (size_t)g->o->max_prompt;
        g->st->truncated_prompts++;
    }
    j->raw = rl_malloc(r->size);
    memcpy(j->raw, r->raw, r->size);
    j->rec = *r;
    j->rec.raw = j->raw;
    mpv_decode(j->raw, &j->rec.map);
    rec_get_str(&j->rec, "id", &id);
    j->id = id.s;
    j->id_len = id.n;
    j->s = rl_calloc((size_t)g->o->n, sizeof *j->s);
    for (int i = 0; i < g->o->n; i++) {
        rng_seed(&j->s[i].rng, rng_hash(g->o->seed, id.s, id.n, (uint64_t)i));
        if (g->tc->tok)
            tok_stream_init(&j->s[i].ts, g->tc->tok, TOK_SKIP_SPECIAL);
    }
    g->st->prompt_tokens += j->prompt.n;
    return 0;
}

/* Read the next record into a new job at the tail. */
static struct job *read_job(struct gen *g, struct rec_reader *in)
{
    if (g->input_done || g->count == g->cap)
        return NULL;
    struct rec r;
    struct job *j = rl_calloc(1, sizeof *j);
    int k = rec_next(in, &r);
    if (k <= 0 || job_init(g, j, &r)) {
        g->input_done = true;
        if (k != 0)
            g->input_error = rl_strdup(rl_errmsg());
        free(j);
        return NULL;
    }
    g->jobs[g->count++] = j;
    return j;
}

/* ---------------- sampling ---------------- */

static bool is_stop_id(const struct gen *g, int tok)
{
    for (int i = 0; i < g->n_stop; i++)
        if (g->stop[i] == tok)
            return true;
    return false;
}

/* Look for a stop string in the text that the last token may have completed. */
static void check_stop_strings(struct gen *g, struct sample *s, size_t before)
{
    size_t from = before > g->max_stop_len ? before - g->max_stop_len : 0;
    for (int i = 0; i < g->o->n_stop_strs; i++) {
        const char *p = memmem(s->text.data + from, s->text.len - from, g->o->stop_strs[i], strlen(g->o->stop_strs[i]));
        if (p) {
            s->text.len = (size_t)(p - s->text.data);
            s->finish = STOPPED;
            return;
        }
    }
}

/* Take one sampled token: record it, decode it, decide whether the sample ends. */
static void accept_token(struct gen *g, struct sample *s, int tok, double logp)
{
    tok_ids_push(&s->ids, tok);
    s->logp += logp;
    g->st->tokens++;
    if (is_stop_id(g, tok)) {
        s->finish = STOPPED;
        return;
    }
    if (g->tc->tok) {
        size_t before = s->text.len;
        tok_stream_push(&s->ts, tok, &s->text);
        if (g->o->n_stop_strs)
            check_stop_strings(g, s, before);
    }
    if (s->finish == RUNNING && (int)s->ids.n >= g->o->max_new)
        s->finish = LENGTH;
}

static void sample_from(struct gen *g, struct sample *s, const float *logits)
{
    double logp;
    int tok = sample_next(&g->o->sampler, logits, g->m->V, &s->rng, &g->scratch[0], &logp);
    accept_token(g, s, tok, logp);
}

/* Decode steps draw on the backend, next to the logits (model_step_draw),
 * unless a benchmark asks for the host's draws. */
static bool draws_on_backend(const struct gen *g) { return !g->o->host_sampling; }

static struct sample *slot_sample(struct gen *g, int slot)
{
    return &g->slot[slot].job->s[g->slot[slot].j];
}

/* The host's draws for the n rows of g->logits, rows in parallel: each
 * sample has its own rng, so the threads change nothing in the result. */
static void draw_on_host(struct gen *g, int n)
{
#pragma omp parallel for schedule(dynamic) num_threads(g->n_scratch) if (n > 1)
    for (int k = 0; k < n; k++) {
        struct sample *s = slot_sample(g, g->step_slots[k]);
        g->step_drawn[k] = sample_next(&g->o->sampler, g->logits + (size_t)k * g->m->V, g->m->V, &s->rng,
                                       &g->scratch[omp_get_thread_num()], &g->step_logp[k]);
    }
}

/* ---------------- scheduling ---------------- */

/* A free slot, preferring one that holds j's prompt; -1 when none is free. */
static int free_slot(const struct gen *g, const struct job *j)
{
    int any = -1;
    for (int i = 0; i < g->o->batch; i++)
        if (!g->slot[i].job) {
            if (g->slot[i].prefix == j)
                return i;
            if (any < 0)
                any = i;
        }
    return any;
}

static int prefix_slot(const struct gen *g, const struct job *j)
{
    for (int i = 0; i < g->o->batch; i++)
        if (g->slot[i].prefix == j)
            return i;
    return -1;
}

/* A sample of j has ended: its text is complete and j is one closer to done. */
static void sample_done(struct gen *g, struct job *j, struct sample *s)
{
    if (g->tc->tok)
        tok_stream_finish(&s->ts, &s->text);
    j->done++;
    g->st->samples++;
}

static void finish_sample(struct gen *g, int slot)
{
    sample_done(g, g->slot[slot].job, slot_sample(g, slot));
    g->slot[slot].job = NULL;
}

/* Prefill j's prompt into a free slot and keep its last logits, from which
 * each sample draws its first token. The slot's index, or -1. */
static int prefill(struct gen *g, struct job *j)
{
    int slot = free_slot(g, NULL), plen = (int)j->prompt.n;
    kv_cache_clear(g->cache, slot);
    g->slot[slot].prefix = NULL;
    if (model_step(g->m, g->cache, 1, &slot, &plen, j->prompt.v, g->logits))
        return rl_err_prefix("%s: record %llu", j->rec.input, (unsigned long long)j->rec.index);
    g->slot[slot].prefix = j;
    if (!j->head)
        j->head = rl_malloc((size_t)g->m->V * sizeof *j->head);
    memcpy(j->head, g->logits, (size_t)g->m->V * sizeof *j->head);
    g->st->prefills++;
    return slot;
}

/* Start j's waiting samples in the free slots. The prompt is prefilled once:
 * a sample starts in a slot that holds it (cut back to the prompt) or in a
 * copy of one. Samples that end on their first token never take a slot. */
static int start_samples(struct gen *g, struct job *j)
{
    int src = prefix_slot(g, j), plen = (int)j->prompt.n, slot;
    if (src < 0 && (src = prefill(g, j)) < 0)
        return -1;
    while (j->started < g->o->n && (slot = free_slot(g, j)) >= 0) {
        int jj = j->started++;
        struct sample *s = &j->s[jj];
        sample_from(g, s, j->head);
        if (s->finish != RUNNING) {
            sample_done(g, j, s);
            continue;
        }
        kv_cache_fork(g->cache, slot, g->slot[slot].prefix == j ? slot : src, plen);
        g->slot[slot] = (struct slot){.job = j, .prefix = j, .j = jj, .last = s->ids.v[s->ids.n - 1]};
    }
    if (j->started == g->o->n) {
        free(j->head);
        j->head = NULL;
    }
    return 0;
}

/* Give every free slot work: the waiting samples of the oldest job first,
 * then the next record's. A record starts as soon as one slot is free; its
 * other samples follow as slots free up, forked from its prompt's cache. */
static int admit(struct gen *g, struct rec_reader *in)
{
    while (free_slot(g, NULL) >= 0) {
        struct job *j = NULL;
        for (int k = 0; k < g->count && !j; k++)
            if (g->jobs[k]->started < g->o->n)
                j = g->jobs[k];
        if (!j && !(j = read_job(g, in)))
            return 0;
        if (start_samples(g, j))
            return -1;
    }
    return 0;
}

static int decode_step(struct gen *g)
{
    int n = 0;
    for (int i = 0; i < g->o->batch; i++)
        if (g->slot[i].job) {
            g->step_slots[n] = i;
            g->step_tok[n++] = g->slot[i].last;
        }
    if (!n)
        return 0;
    g->st->steps++;
    g->st->rows += (uint64_t)n;
    float t = g->o->sampler.temperature;
    if (draws_on_backend(g)) {
        for (int k = 0; k < n; k++)          /* the uniform sample_next would take */
            g->step_u[k] = t > 0 ? rng_uniform_double(&slot_sample(g, g->step_slots[k])->rng) : 0;
        if (model_step_draw(g->m, g->cache, n, g->step_slots, g->ones, g->step_tok, &g->o->sampler, g->step_u,
                            g->step_drawn, g->step_logp))
            return -1;
    } else {
        if (model_step(g->m, g->cache, n, g->step_slots, g->ones, g->step_tok, g->logits))
            return -1;
        draw_on_host(g, n);
    }
    for (int k = 0; k < n; k++) {
        struct slot *sl = &g->slot[g->step_slots[k]];
        struct sample *s = &sl->job->s[sl->j];
        accept_token(g, s, g->step_drawn[k], g->step_logp[k]);
        sl->last = s->ids.v[s->ids.n - 1];
        if (s->finish != RUNNING)
            finish_sample(g, g->step_slots[k]);
    }
    return 0;
}

/* ---------------- output ---------------- */

static int write_job(struct gen *g, struct job *j, struct rec_writer *out)
{
    int n = g->o->n;
    rec_begin(out, &j->rec);
    rec_put_i32s(out, "prompt_ids", j->prompt.v, j->prompt.n);
    if (g->tc->tok) {
        msgpack_packer *pk = rec_put(out, "responses");
        msgpack_pack_array(pk, (size_t)n);
        for (int i = 0; i < n; i++) {
            msgpack_pack_str(pk, j->s[i].text.len);
            msgpack_pack_str_body(pk, j->s[i].text.data, j->s[i].text.len);
        }
    }
    msgpack_packer *pk = rec_put(out, "response_ids");
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_array(pk, j->s[i].ids.n);
        for (size_t t = 0; t < j->s[i].ids.n; t++)
            msgpack_pack_int32(pk, j->s[i].ids.v[t]);
    }
    pk = rec_put(out, "finish");
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        const char *f = j->s[i].finish == STOPPED ? "stop" : "length";
        msgpack_pack_str(pk, strlen(f));
        msgpack_pack_str_body(pk, f, strlen(f));
    }
    pk = rec_put(out, "logps");
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++)
        msgpack_pack_double(pk, j->s[i].logp);
    rec_put_i64(out, "seed", (int64_t)g->o->seed);
    if (g->tc->tok)
        rec_put_cstr(out, "tok", tok_fingerprint(g->tc->tok));
    g->st->records++;
    uint64_t toks = 0;
    for (int i = 0; i < n; i++)
        toks += j->s[i].ids.n;
    progress_add(&g->progress, 1, toks);
    return rec_end(out);
}

/* Write finished jobs: from the head in input order, or any with --unordered. */
static int drain(struct gen *g, struct rec_writer *out)
{
    int wrote = 0;
    for (int k = 0; k < g->count;) {
        struct job *j = g->jobs[k];
        if (j->done < g->o->n) {
            if (!g->o->unordered)
                break;
            k++;
            continue;
        }
        if (write_job(g, j, out))
            return -1;
        job_free(g, j);
        memmove(g->jobs + k, g->jobs + k + 1, (size_t)(g->count - k - 1) * sizeof *g->jobs);
        g->count--;
        wrote++;
    }
    return wrote ? rec_flush(out) : 0;
}

/* ---------------- the run ---------------- */

static int setup(struct gen *g, struct model *m, struct tok_ctx *tc, const struct gen_opts *o, struct gen_stats *st)
{
    *g = (struct gen){.m = m, .tc = tc, .o = o, .st = st};
    g->cache = kv_cache_new(m, o->batch, o->max_prompt + o->max_new + 1);
    if (!g->cache) {             /* every slot holds a whole prompt and response: say what shrinks it */
        char why[512];
        snprintf(why, sizeof why, "%s", rl_errmsg());
        return rl_err("%s: lower --batch (%d), --max-prompt-tokens (%d) or --max-new-tokens (%d)", why, o->batch,
                      o->max_prompt, o->max_new);
    }
    st->kv_bytes = kv_cache_bytes(g->cache);
    st->kv_bf16 = g->cache->bf16;
    g->slot = rl_calloc((size_t)o->batch, sizeof *g->slot);
    g->cap = o->batch * 4 > 64 ? o->batch * 4 : 64;      /* records in flight: bounds the reorder buffer */
    g->jobs = rl_calloc((size_t)g->cap, sizeof *g->jobs);
    g->logits = rl_malloc((size_t)o->batch * m->V * sizeof *g->logits);
    g->step_slots = rl_malloc((size_t)o->batch * sizeof(int));
    g->step_tok = rl_malloc((size_t)o->batch * sizeof(int));
    g->ones = rl_malloc((size_t)o->batch * sizeof(int));
    for (int i = 0; i < o->batch; i++)
        g->ones[i] = 1;
    g->step_drawn = rl_malloc((size_t)o->batch * sizeof(int));
    g->step_u = rl_malloc((size_t)o->batch * sizeof(double));
    g->step_logp = rl_malloc((size_t)o->batch * sizeof(double));
    /* scratches of 3 doubles a token: one for the prefill's draws, one per
     * thread when decode steps draw on the host */
    int threads = omp_get_max_threads();
    g->n_scratch = draws_on_backend(g) ? 1 : threads < o->batch ? threads : o->batch;
    g->scratch = rl_calloc((size_t)g->n_scratch, sizeof *g->scratch);
    for (int i = 0; i < g->n_scratch; i++)
        sample_scratch_init(&g->scratch[i], m->V);
    for (int i = 0; i < o->n_stop_ids; i++)
        add_id(&g->stop, &g->n_stop, o->stop_ids[i]);
    for (int i = 0; i < o->n_stop_strs; i++)
        if (strlen(o->stop_strs[i]) > g->max_stop_len)
            g->max_stop_len = strlen(o->stop_strs[i]);
    progress_init(&g->progress, o->quiet, 0);
    return 0;
}

static void teardown(struct gen *g)
{
    for (int k = 0; k < g->count; k++)
        job_free(g, g->jobs[k]);
    kv_cache_free(g->cache);
    free(g->slot); free(g->jobs); free(g->logits); free(g->step_slots); free(g->step_tok); free(g->ones);
    free(g->stop); free(g->input_error);
    free(g->step_drawn); free(g->step_u); free(g->step_logp);
    for (int i = 0; i < g->n_scratch; i++)
        sample_scratch_free(&g->scratch[i]);
    free(g->scratch);
}

int gen_run(struct model *m, struct tok_ctx *tc, const struct gen_opts *o, struct rec_reader *in,
            struct rec_writer *out, struct gen_stats *st)
{
    struct gen g;
    *st = (struct gen_stats){0};
    if (setup(&g, m, tc, o, st))
        return -1;
    double t0 = cli_now();
    int rc = 0;
    for (;;) {
        if ((rc = admit(&g, in)) || (rc = decode_step(&g)) || (rc = drain(&g, out)))
            break;
        progress_add(&g.progress, 0, 0);
        if (g.input_done && g.count == 0)
            break;
    }
    progress_done(&g.progress);
    st->seconds = cli_now() - t0;
    if (!rc && g.input_error)
        rc = rl_err("%s", g.input_error);
    teardown(&g);
    return rc;
}
