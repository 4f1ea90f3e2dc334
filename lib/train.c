#include "train.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "err.h"
#include "fsutil.h"
#include "rng.h"
#include "safetensors.h"

void train_metric_add(struct train_metrics *m, const char *name, double v)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->name[i], name)) {
            m->sum[i] += v;
            return;
        }
    if (m->n < TRAIN_MAX_METRICS) {
        m->name[m->n] = name;
        m->sum[m->n++] = v;
    }
}

void train_permutation(uint64_t seed, long epoch, size_t n, size_t *perm)
{
    struct rng r;
    rng_seed(&r, rng_hash(seed, "epoch", 5, (uint64_t)epoch));
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_uniform_double(&r) * (double)i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

bool train_fit(int *plen, int *skip, int *rlen, int n, int max_len, int max_prompt)
{
    int longest = 0;
    bool cut = false;
    *skip = 0;
    for (int i = 0; i < n; i++)
        longest = rlen[i] > longest ? rlen[i] : longest;
    if (max_len <= 0)
        return false;
    if (*plen + longest > max_len && max_prompt > 0 && *plen > max_prompt) {
        *skip = *plen - max_prompt;
        *plen = max_prompt;
        cut = true;
    }
    for (int i = 0; i < n; i++)
        if (*plen + rlen[i] > max_len) {
            rlen[i] = max_len - *plen > 0 ? max_len - *plen : 0;
            cut = true;
        }
    return cut;
}

void train_batch_reserve(struct train_batch *b, size_t ntok, size_t nseq)
{
    if (ntok > b->cap_tok) {
        b->cap_tok = ntok;
        b->tokens = rl_realloc(b->tokens, ntok * sizeof *b->tokens);
        b->targets = rl_realloc(b->targets, ntok * sizeof *b->targets);
        b->dlogp = rl_realloc(b->dlogp, ntok * sizeof *b->dlogp);
    }
    if (nseq > b->cap_seq) {
        b->cap_seq = nseq;
        b->len = rl_realloc(b->len, nseq * sizeof *b->len);
    }
}

void train_batch_free(struct train_batch *b)
{
    free(b->tokens);
    free(b->targets);
    free(b->dlogp);
    free(b->len);
    *b = (struct train_batch){0};
}

size_t train_ids_append(int32_t **ids, size_t *len, size_t *cap, const int32_t *v, int n)
{
    if (*len + (size_t)n > *cap) {
        while (*len + (size_t)n > *cap)
            *cap = *cap ? 2 * *cap : 4096;
        *ids = rl_realloc(*ids, *cap * sizeof **ids);
    }
    if (n > 0)
        memcpy(*ids + *len, v, (size_t)n * sizeof *v);
    *len += (size_t)n;
    return *len - (size_t)n;
}

uint64_t train_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int train_copy_tokenizer(const char *src, const char *dst)
{
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "generation_config.json", "vocab.json", "merges.txt"};
    char a[FS_PATH_MAX], b[FS_PATH_MAX];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (fs_join(a, sizeof a, src, files[i]) || fs_join(b, sizeof b, dst, files[i]))
            return rl_err("%s: path too long", src);
        if (fs_exists(a) && fs_copy_file(a, b))
            return -1;
    }
    return 0;
}

/* ---------------- trainer state ---------------- */

struct run {
    const struct train_cfg *cfg;
    struct train_task *task;
    struct model *m;
    struct adamw *opt;
    long step, total, steps_per_epoch;
    struct lr_schedule sched;
};

static int write_state(const struct run *r, const char *dir)
{
    char sub[FS_PATH_MAX], path[FS_PATH_MAX];
    if (fs_join(sub, sizeof sub, dir, "trainer_state") || fs_join(path, sizeof path, sub, "optimizer.safetensors"))
        return rl_err("%s: path too long", dir);
    if (mkdir(sub, 0777) && !fs_is_dir(sub))
        return rl_errno("%s: cannot create", sub);
    size_t n = r->m->n_params;
    const struct backend *bk = r->m->bk;
    float *host = rl_malloc(3 * n * sizeof *host);
    bk->download(host, r->m->w_mem, n * sizeof *host);
    bk->download(host + n, r->opt->m, n * sizeof *host);
    bk->download(host + 2 * n, r->opt->v, n * sizeof *host);
    struct st_out_tensor t[3] = {
        {"weights", ST_F32, 1, {(int64_t)n}, host},
        {"exp_avg", ST_F32, 1, {(int64_t)n}, host + n},
        {"exp_avg_sq", ST_F32, 1, {(int64_t)n}, host + 2 * n},
    };
    int rc = st_write(path, t, 3);
    free(host);
    if (rc)
        return -1;
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r->task->data_hash);
    json_t *s = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I}",
                          "task", r->task->name, "step", (json_int_t)r->step, "total_steps", (json_int_t)r->total,
                          "adam_step", (json_int_t)r->opt->step, "n_examples", (json_int_t)r->task->n_examples,
                          "data_hash", hash, "seed", (json_int_t)r->cfg->seed, "batch", (json_int_t)r->cfg->batch,
                          "epochs", (json_int_t)r->cfg->epochs, "n_params", (json_int_t)n);
    char *text = json_dumps(s, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(s);
    if (fs_join(path, sizeof path, sub, "state.json"))
        return free(text), rl_err("%s: path too long", sub);
    rc = fs_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

/* The whole output directory, built beside it and swapped in atomically. */
static int save_checkpoint(const struct run *r, bool with_state)
{
    char tmp[FS_PATH_MAX];
    const char *out = r->cfg->out_dir;
    if (fs_dir_begin(out, tmp, sizeof tmp, true))
        return -1;
    if (model_save(r->m, tmp) || train_copy_tokenizer(r->cfg->model_dir, tmp) ||
        (with_state && write_state(r, tmp)) || fs_dir_commit(tmp, out, true)) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rl_errmsg());
        fs_rm_rf(tmp);
        return rl_err("saving %s: %s", out, msg);
    }
    return 0;
}

static json_int_t state_int(json_t *s, const char *key) { return json_integer_value(json_object_get(s, key)); }

/* Resume: weights and moments exactly as saved, and the step count. */
static int load_state(struct run *r, const char *dir)
{
    char path[FS_PATH_MAX];
    size_t len;
    snprintf(path, sizeof path, "%s/trainer_state/state.json", dir);
    char *text = fs_read_file(path, &len);
    if (!text)
        return -1;
    json_error_t je;
    json_t *s = json_loads(text, 0, &je);
    free(text);
    if (!s)
        return rl_err("%s: line %d: %s", path, je.line, je.text);
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r->task->data_hash);
    const char *task = json_string_value(json_object_get(s, "task"));
    const char *h = json_string_value(json_object_get(s, "data_hash"));
    int rc = 0;
    if (!task || strcmp(task, r->task->name))
        rc = rl_err("%s: a %s run cannot resume a %s run", path, r->task->name, task ? task : "(unknown)");
    else if (state_int(s, "n_examples") != (json_int_t)r->task->n_examples || !h || strcmp(h, hash))
        rc = rl_err("%s: the training data differ from the run being resumed (%lld examples, data %s; now %zu, %s)",
                    path, (long long)state_int(s, "n_examples"), h ? h : "?", r->task->n_examples, hash);
    else if (state_int(s, "batch") != r->cfg->batch || state_int(s, "epochs") != r->cfg->epochs ||
             state_int(s, "seed") != (json_int_t)r->cfg->seed)
        rc = rl_err("%s: --batch, --epochs and --seed must be those of the run being resumed (%lld, %lld, %lld)",
                    path, (long long)state_int(s, "batch"), (long long)state_int(s, "epochs"),
                    (long long)state_int(s, "seed"));
    else if (state_int(s, "n_params") != (json_int_t)r->m->n_params)
        rc = rl_err("%s: saved for %lld parameters, the model has %zu", path, (long long)state_int(s, "n_params"),
                    r->m->n_params);
    r->step = (long)state_int(s, "step");
    r->opt->step = (long)state_int(s, "adam_step");
    json_decref(s);
    if (rc)
        return -1;
    snprintf(path, sizeof path, "%s/trainer_state/optimizer.safetensors", dir);
    struct st_file *f = st_open(path);
    if (!f)
        return -1;
    int64_t shape[1] = {(int64_t)r->m->n_params};
    size_t n = r->m->n_params;
    float *host = rl_malloc(n * sizeof *host);
    const struct backend *bk = r->m->bk;
    const char *names[3] = {"weights", "exp_avg", "exp_avg_sq"};
    float *dst[3] = {r->m->w_mem, r->opt->m, r->opt->v};
    for (int i = 0; i < 3 && !rc; i++) {
        rc = st_read_f32(f, names[i], host, 1, shape);
        if (!rc)
            bk->upload(dst[i], host, n * sizeof *host);
    }
    free(host);
    st_close(f);
    return rc;
}

/* ---------------- the loop ---------------- */

static void emit_metrics(struct rec_writer *w, const struct run *r, const struct train_metrics *acc, int n_ex,
                         double norm, double gnorm, double lr, double secs)
{
    rec_begin(w, NULL);
    rec_put_i64(w, "step", r->step + 1);
    rec_put_f64(w, "epoch", (double)(r->step + 1) / (double)r->steps_per_epoch);
    for (int i = 0; i < acc->n; i++)
        rec_put_f64(w, acc->name[i], acc->sum[i] / norm);
    rec_put_f64(w, "grad_norm", gnorm);
    rec_put_f64(w, "lr", lr);
    rec_put_i64(w, "examples", n_ex);
    rec_put_i64(w, "tokens", (int64_t)acc->tokens);
    rec_put_f64(w, "tok_per_s", secs > 0 ? (double)acc->tokens / secs : 0);
    if (rec_end(w) == 0)
        rec_flush(w);
}

static int decays(const struct model_param *p) { return p->ndim >= 2; }

struct adamw_step_args {
    struct adamw *o;
    struct model *m;
    float lr, weight_decay, grad_scale;
};
static void adamw_run(void *ctx, size_t off, size_t n, int decayed)
{
    const struct adamw_step_args *r = ctx;
    adamw_update(r->o, off, n, r->m->w_mem, r->m->g_mem, r->grad_scale, r->lr, decayed ? r->weight_decay : 0.0f);
}

void train_adamw_step(struct adamw *o, struct model *m, float lr, float weight_decay, float grad_scale)
{
    struct adamw_step_args r = {o, m, lr, weight_decay, grad_scale};
    adamw_begin(o);
    model_param_runs(m, decays, adamw_run, &r);
}

/* How many of the step's next examples go into one forward. */
static int micro_size(const struct run *r, const size_t *idx, int left)
{
    const struct train_task *t = r->task;
    if (!t->tokens)
        return left < r->cfg->micro_batch ? left : r->cfg->micro_batch;
    size_t budget = t->micro_tokens, used = 0;
    int k = 0;
    while (k < left && (k == 0 || used + t->tokens(r->task, idx[k]) <= budget))
        used += t->tokens(r->task, idx[k++]);
    return k;
}

static int one_step(struct run *r, const size_t *idx, int n, struct rec_writer *metrics)
{
    double t0 = cli_now(), norm = 0;
    struct train_metrics acc = {0};
    for (int i = 0; i < n; i++)
        norm += r->task->weight ? r->task->weight(r->task, idx[i]) : 1;
    if (!(norm > 0))
        norm = 1;
    model_zero_grad(r->m);
    for (int i = 0; i < n;) {
        int k = micro_size(r, idx + i, n - i);
        if (r->task->micro(r->task, r->m, idx + i, k, 1.0 / norm, &acc))
            return rl_err_prefix("step %ld", r->step + 1);
        i += k;
    }
    double gnorm = grad_norm(r->m->bk, r->m->g_mem, r->m->n_params);
    double loss = acc.n ? acc.sum[0] / norm : 0;
    if (!isfinite(loss) || !isfinite(gnorm))
        return rl_err("step %ld: the %s is not finite (loss %g, gradient norm %g); stopping, the last "
                      "checkpoint in %s is kept", r->step + 1, isfinite(loss) ? "gradient" : "loss", loss, gnorm,
                      r->cfg->out_dir);
    double lr = lr_at(&r->sched, r->step);
    float coef = r->cfg->max_grad_norm > 0 ? clip_coef(gnorm, r->cfg->max_grad_norm) : 1.0f;
    train_adamw_step(r->opt, r->m, (float)lr, (float)r->cfg->weight_decay, coef);
    if (metrics)
        emit_metrics(metrics, r, &acc, n, norm, gnorm, lr, cli_now() - t0);
    return 0;
}

static int prepare(struct run *r)
{
    const struct train_cfg *c = r->cfg;
    bool resuming = c->resume && fs_is_dir(c->out_dir);
    char st[FS_PATH_MAX];
    snprintf(st, sizeof st, "%s/trainer_state/state.json", c->out_dir);
    if (resuming && !fs_exists(st))
        return rl_err("%s holds a finished model (no trainer_state/): nothing to resume", c->out_dir);
    if (!c->resume && !c->force && fs_exists(c->out_dir))
        return rl_err("%s exists: use --resume to continue its training or --force to replace it", c->out_dir);
    r->m = resuming || !r->task->open ? model_open(resuming ? c->out_dir : c->model_dir, c->device)
                                      : r->task->open(r->task, c->model_dir, c->device);
    if (!r->m)
        return -1;
    r->m->batch_invariant = !c->batch_gemm;
    struct adamw_cfg ac = ADAMW_DEFAULTS;
    ac.weight_decay = (float)c->weight_decay;
    if (!(r->opt = adamw_new(r->m->bk, r->m->n_params, &ac)))
        return -1;
    r->steps_per_epoch = (long)((r->task->n_examples + (size_t)c->batch - 1) / (size_t)c->batch);
    r->total = r->steps_per_epoch * c->epochs;
    r->sched = (struct lr_schedule){c->schedule, c->lr, (long)llround(c->warmup_ratio * (double)r->total), r->total};
    return resuming ? load_state(r, c->out_dir) : 0;
}

int train_run(const struct train_cfg *c, struct train_task *task, struct rec_writer *metrics)
{
    if (!task->n_examples)
        return rl_err("no training examples");
    struct run r = {.cfg = c, .task = task};
    size_t *perm = rl_malloc(task->n_examples * sizeof *perm);
    long epoch = -1, this_run = 0;
    int rc = prepare(&r);
    struct progress pr;
    progress_init(&pr, c->quiet, (uint64_t)(r.total - r.step));
    pr.unit = "steps";
    if (!rc && r.step == 0 && task->evaluate)
        rc = task->evaluate(task, r.m, 0, metrics);
    while (!rc && r.step < r.total && !(c->max_steps && this_run >= c->max_steps)) {
        if (r.step / r.steps_per_epoch != epoch) {
            epoch = r.step / r.steps_per_epoch;
            train_permutation(c->seed, epoch, task->n_examples, perm);
        }
        size_t first = (size_t)(r.step % r.steps_per_epoch) * (size_t)c->batch;
        int n = (int)(task->n_examples - first < (size_t)c->batch ? task->n_examples - first : (size_t)c->batch);
        rc = one_step(&r, perm + first, n, metrics);
        if (rc)
            break;
        r.step++;
        this_run++;
        progress_add(&pr, 1, 0);
        bool last = r.step == r.total, pause = c->max_steps && this_run >= c->max_steps;
        if (!last && (pause || (c->save_every && r.step % c->save_every == 0)))
            rc = save_checkpoint(&r, true);
    }
    progress_done(&pr);
    if (!rc && r.step == r.total && this_run > 0 && task->evaluate)
        rc = task->evaluate(task, r.m, r.step, metrics);
    if (!rc && r.step == r.total)
        rc = save_checkpoint(&r, c->keep_state);
    free(perm);
    adamw_free(r.opt);
    model_close(r.m);
    return rc;
}
