#include "rm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "rng.h"

int rm_check(const struct model *m, const char *dir)
{
    if (m->cfg.head != HEAD_SCORE)
        return rl_err("%s/config.json: \"architectures\" is %s, not a sequence classifier (a reward model "
                      "is e.g. LlamaForSequenceClassification)", dir, m->cfg.architecture);
    if (m->cfg.num_labels != 1)
        return rl_err("%s/config.json: a reward model has one label, this one has %d (\"num_labels\")", dir,
                      m->cfg.num_labels);
    return 0;
}

/* "LlamaForCausalLM" -> "LlamaForSequenceClassification" */
static void classifier_name(char *dst, size_t n, const char *lm)
{
    const char *p = strstr(lm, "ForCausalLM");
    if (p)
        snprintf(dst, n, "%.*sForSequenceClassification", (int)(p - lm), lm);
    else
        snprintf(dst, n, "%s", lm);
}

struct model *rm_open(const char *dir, const char *device, uint64_t seed)
{
    struct model *lm = model_open(dir, device);
    if (!lm)
        return NULL;
    if (lm->cfg.head == HEAD_SCORE) {
        if (rm_check(lm, dir))
            return model_close(lm), NULL;
        return lm;
    }
    struct model_config c = lm->cfg;
    c.head = HEAD_SCORE;
    c.num_labels = 1;
    classifier_name(c.architecture, sizeof c.architecture, lm->cfg.architecture);
    struct model *m = model_new(&c, device);
    if (!m)
        return model_close(lm), NULL;
    m->save_dtype = lm->save_dtype;
    for (int i = 0; i < m->n_params_tensors; i++) {
        const struct model_param *p = &m->params[i], *q = model_find_param(lm, p->name);
        if (q && q->numel == p->numel) {
            m->bk->copy(m->w_mem + p->offset, lm->w_mem + q->offset, p->numel);
            continue;
        }
        if (strcmp(p->name, "score.weight")) {
            rl_err("%s: the language model has no tensor %s for the reward model", dir, p->name);
            return model_close(lm), model_close(m), NULL;
        }
        struct rng r;
        rng_seed(&r, rng_hash(seed, p->name, strlen(p->name), 0));
        float std = c.initializer_range > 0 ? c.initializer_range : 0.02f;
        float *host = rl_malloc(p->numel * sizeof *host);
        for (size_t k = 0; k < p->numel; k++)
            host[k] = std * rng_normal(&r);
        m->bk->upload(m->w_mem + p->offset, host, p->numel * sizeof *host);
        free(host);
    }
    model_close(lm);
    return m;
}

void rm_fit_left(int plen, int rlen, int max_len, int *skip_prompt, int *skip_resp)
{
    int excess = max_len > 0 ? plen + rlen - max_len : 0;
    if (excess < 0)
        excess = 0;
    *skip_prompt = excess < plen ? excess : plen;
    *skip_resp = excess - *skip_prompt;
}

static size_t push_seq(struct rm_data *d, const int32_t *prompt, int plen, const int32_t *resp, int rlen,
                       int max_len, int *len)
{
    int sp, sr;
    rm_fit_left(plen, rlen, max_len, &sp, &sr);
    d->truncated += sp + sr > 0;
    *len = plen - sp + rlen - sr;
    size_t at = train_ids_append(&d->ids, &d->n_ids, &d->cap_ids, prompt + sp, plen - sp);
    train_ids_append(&d->ids, &d->n_ids, &d->cap_ids, resp + sr, rlen - sr);
    return at;
}

void rm_data_add(struct rm_data *d, const int32_t *prompt, int plen, const int32_t *chosen, int clen,
                 const int32_t *rejected, int rlen, double margin, int max_len)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 256;
        d->pair = rl_realloc(d->pair, d->cap * sizeof *d->pair);
    }
    struct rm_pair *p = &d->pair[d->n++];
    p->chosen = push_seq(d, prompt, plen, chosen, clen, max_len, &p->clen);
    p->rejected = push_seq(d, prompt, plen, rejected, rlen, max_len, &p->rlen);
    p->margin = margin;
}

void rm_data_free(struct rm_data *d)
{
    free(d->pair);
    free(d->ids);
    *d = (struct rm_data){0};
}

static uint64_t data_hash(const struct rm_data *d)
{
    uint64_t h = train_hash(TRAIN_HASH_INIT, d->ids, d->n_ids * sizeof *d->ids);
    for (size_t i = 0; i < d->n; i++) {
        int lens[2] = {d->pair[i].clen, d->pair[i].rlen};
        h = train_hash(h, lens, sizeof lens);
        h = train_hash(h, &d->pair[i].margin, sizeof d->pair[i].margin);
    }
    return h;
}

static double log_sigmoid(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }
static double sigmoid(double z) { return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)); }

static int rm_micro(struct train_task *task, struct model *m, const size_t *idx, int n, double scale,
                    struct train_metrics *acc)
{
    struct rm_task *t = (struct rm_task *)task;
    const struct rm_data *d = t->data;
    size_t ntok = 0, at = 0;
    for (int i = 0; i < n; i++)
        ntok += (size_t)(d->pair[idx[i]].clen + d->pair[idx[i]].rlen);
    if (ntok > t->cap_tok) {
        t->cap_tok = ntok;
        t->tokens = rl_realloc(t->tokens, ntok * sizeof *t->tokens);
    }
    if (2 * (size_t)n > t->cap_seq) {
        t->cap_seq = 2 * (size_t)n;
        t->len = rl_realloc(t->len, t->cap_seq * sizeof *t->len);
        t->dscore = rl_realloc(t->dscore, t->cap_seq * sizeof *t->dscore);
    }
    for (int i = 0; i < n; i++) {
        const struct rm_pair *p = &d->pair[idx[i]];
        for (int k = 0; k < p->clen; k++) t->tokens[at++] = d->ids[p->chosen + k];
        for (int k = 0; k < p->rlen; k++) t->tokens[at++] = d->ids[p->rejected + k];
        t->len[2 * i] = p->clen;
        t->len[2 * i + 1] = p->rlen;
    }
    struct model_batch b = {2 * n, t->len, t->tokens, NULL};
    if (model_forward(m, &b, MODEL_TRAIN))
        return -1;
    for (int i = 0; i < n; i++) {
        double rc = m->scores[2 * i], rr = m->scores[2 * i + 1], z = rc - rr - d->pair[idx[i]].margin;
        double g = -(1 - sigmoid(z));                   /* d loss / d rc; d loss / d rr = -g */
        t->dscore[2 * i] = (float)(g * scale);
        t->dscore[2 * i + 1] = (float)(-g * scale);
        train_metric_add(acc, "loss", -log_sigmoid(z));
        train_metric_add(acc, "accuracy", rc > rr);
        train_metric_add(acc, "margin", rc - rr);
        train_metric_add(acc, "reward_chosen", rc);
        train_metric_add(acc, "reward_rejected", rr);
    }
    acc->tokens += ntok;
    return model_backward(m, NULL, t->dscore, NULL);
}

static struct model *rm_task_open(struct train_task *task, const char *dir, const char *device)
{
    return rm_open(dir, device, ((struct rm_task *)task)->seed);
}

int rm_score(struct model *m, int n, const int *len, const int *tokens, double *out)
{
    struct model_batch b = {n, len, tokens, NULL};
    if (model_forward(m, &b, 0))
        return -1;
    for (int i = 0; i < n; i++)
        out[i] = m->scores[i];
    return 0;
}

/* Accuracy, mean margin, loss and reward mean/std on the held-out pairs. */
static int rm_evaluate(struct train_task *task, struct model *m, long step, struct rec_writer *w)
{
    struct rm_task *t = (struct rm_task *)task;
    const struct rm_data *d = t->eval;
    if (!d || !d->n)
        return 0;
    /* the arena holds each pair's chosen then rejected sequence, pair after
     * pair: a run of pairs is already a packed batch */
    _Static_assert(sizeof(int32_t) == sizeof(int), "token ids are passed to the model as int");
    enum { CHUNK = 8 };
    double correct = 0, margin = 0, loss = 0, sum = 0, sum2 = 0, s[2 * CHUNK];
    int len[2 * CHUNK];
    for (size_t i0 = 0; i0 < d->n; i0 += CHUNK) {
        size_t n = d->n - i0 < CHUNK ? d->n - i0 : CHUNK;
        for (size_t k = 0; k < n; k++) {
            len[2 * k] = d->pair[i0 + k].clen;
            len[2 * k + 1] = d->pair[i0 + k].rlen;
        }
        if (rm_score(m, (int)(2 * n), len, (const int *)d->ids + d->pair[i0].chosen, s))
            return rl_err_prefix("evaluation");
        for (size_t k = 0; k < n; k++) {
            double rc = s[2 * k], rr = s[2 * k + 1];
            correct += rc > rr;
            margin += rc - rr;
            loss += -log_sigmoid(rc - rr - d->pair[i0 + k].margin);
            sum += rc + rr;
            sum2 += rc * rc + rr * rr;
        }
    }
    double n = (double)d->n, mean = sum / (2 * n);
    if (!w)
        return 0;
    rec_begin(w, NULL);
    rec_put_i64(w, "step", step);
    rec_put_bool(w, "eval", true);
    rec_put_i64(w, "eval_pairs", (int64_t)d->n);
    rec_put_f64(w, "eval_accuracy", correct / n);
    rec_put_f64(w, "eval_margin", margin / n);
    rec_put_f64(w, "eval_loss", loss / n);
    rec_put_f64(w, "eval_reward_mean", mean);
    rec_put_f64(w, "eval_reward_std", sqrt(fmax(0, sum2 / (2 * n) - mean * mean)));
    if (rec_end(w))
        return -1;
    return rec_flush(w);
}

void rm_task_init(struct rm_task *t, const struct rm_data *data, const struct rm_data *eval, uint64_t seed)
{
    *t = (struct rm_task){.data = data, .eval = eval, .seed = seed};
    t->task = (struct train_task){.name = "rm", .n_examples = data->n, .data_hash = data_hash(data),
                                  .micro = rm_micro, .open = rm_task_open, .evaluate = rm_evaluate, .ctx = t};
}

void rm_task_free(struct rm_task *t)
{
    free(t->tokens);
    free(t->len);
    free(t->dscore);
}
