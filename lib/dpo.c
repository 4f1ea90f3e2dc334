#include "dpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* log sigmoid(z), stable for large |z| */
static double log_sigmoid(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }
static double sigmoid(double z) { return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z)); }

void dpo_pair_loss(const struct dpo_params *p, double pc, double pr, double rc, double rr,
                   int len_c, int len_r, struct dpo_terms *o)
{
    double beta = p->beta, eps = p->label_smoothing;
    double delta = (pc - pr) - (rc - rr), z = beta * delta;
    o->reward_chosen = beta * (pc - rc);
    o->reward_rejected = beta * (pr - rr);
    double dl_ddelta;
    switch (p->loss) {
    case DPO_SIGMOID:
        o->loss = -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
        dl_ddelta = beta * (sigmoid(z) - (1 - eps));
        o->dpc = dl_ddelta;
        o->dpr = -dl_ddelta;
        break;
    case DPO_HINGE:
        o->loss = 1 - z > 0 ? 1 - z : 0;
        dl_ddelta = 1 - z > 0 ? -beta : 0;
        o->dpc = dl_ddelta;
        o->dpr = -dl_ddelta;
        break;
    case DPO_IPO: {
        double lc = len_c > 0 ? len_c : 1, lr = len_r > 0 ? len_r : 1;
        double d_avg = (pc / lc - pr / lr) - (rc / lc - rr / lr), e = d_avg - 1 / (2 * beta);
        o->loss = e * e;
        o->dpc = 2 * e / lc;
        o->dpr = -2 * e / lr;
        break;
    }
    }
    if (p->nll_coef) {
        double lc = len_c > 0 ? len_c : 1;
        o->loss += p->nll_coef * (-pc / lc);
        o->dpc += -p->nll_coef / lc;
    }
}

int dpo_loss_parse(const char *s, enum dpo_loss *out)
{
    if (!strcmp(s, "sigmoid")) *out = DPO_SIGMOID;
    else if (!strcmp(s, "hinge")) *out = DPO_HINGE;
    else if (!strcmp(s, "ipo")) *out = DPO_IPO;
    else return rl_err("unknown loss '%s' (sigmoid, ipo, hinge)", s);
    return 0;
}

void dpo_data_add(struct dpo_data *d, const int32_t *prompt, int plen, const int32_t *chosen, int clen,
                  const int32_t *rejected, int rlen, double ref_c, double ref_r, int max_len, int max_prompt)
{
    int skip, len[2] = {clen, rlen};
    bool cut = train_fit(&plen, &skip, len, 2, max_len, max_prompt);
    prompt += skip;
    clen = len[0];
    rlen = len[1];
    d->truncated += cut;
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 256;
        d->pair = rl_realloc(d->pair, d->cap * sizeof *d->pair);
    }
    struct dpo_pair *p = &d->pair[d->n++];
    p->plen = plen;
    p->clen = clen;
    p->rlen = rlen;
    p->prompt = train_ids_append(&d->ids, &d->n_ids, &d->cap_ids, prompt, plen);
    p->chosen = train_ids_append(&d->ids, &d->n_ids, &d->cap_ids, chosen, clen);
    p->rejected = train_ids_append(&d->ids, &d->n_ids, &d->cap_ids, rejected, rlen);
    p->ref_chosen = ref_c;
    p->ref_rejected = ref_r;
}

void dpo_data_free(struct dpo_data *d)
{
    free(d->pair);
    free(d->ids);
    *d = (struct dpo_data){0};
}

uint64_t dpo_data_hash(const struct dpo_data *d)
{
    uint64_t h = train_hash(TRAIN_HASH_INIT, d->ids, d->n_ids * sizeof *d->ids);
    for (size_t i = 0; i < d->n; i++) {
        const struct dpo_pair *p = &d->pair[i];
        int lens[3] = {p->plen, p->clen, p->rlen};
        double refs[2] = {p->ref_chosen, p->ref_rejected};
        h = train_hash(h, lens, sizeof lens);
        h = train_hash(h, refs, sizeof refs);
    }
    return h;
}

/* ---------------- the task ---------------- */

/* Sequence = prompt + response; the target of position i is token i+1 when
 * that token belongs to the response, so the sum of the logps is the
 * response's log-prob given the prompt. */
static size_t put_sequence(struct dpo_task *t, size_t at, const int32_t *prompt, int plen, const int32_t *resp,
                           int rlen)
{
    int n = plen + rlen;
    for (int i = 0; i < n; i++) {
        t->buf.tokens[at + i] = i < plen ? prompt[i] : resp[i - plen];
        t->buf.targets[at + i] = (i + 1 >= plen && i + 1 < n) ? (i + 1 < plen ? prompt[i + 1] : resp[i + 1 - plen]) : -1;
    }
    return at + (size_t)n;
}

static double seq_sum(const float *logp, size_t from, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += logp[from + i];
    return s;
}

static int dpo_micro(struct train_task *task, struct model *m, const size_t *idx, int n, double scale,
                     struct train_metrics *acc)
{
    struct dpo_task *t = (struct dpo_task *)task;
    const struct dpo_data *d = t->data;
    size_t ntok = 0;
    for (int i = 0; i < n; i++) {
        const struct dpo_pair *p = &d->pair[idx[i]];
        ntok += (size_t)(2 * p->plen + p->clen + p->rlen);
    }
    train_batch_reserve(&t->buf, ntok, 2 * (size_t)n);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const struct dpo_pair *p = &d->pair[idx[i]];
        at = put_sequence(t, at, d->ids + p->prompt, p->plen, d->ids + p->chosen, p->clen);
        at = put_sequence(t, at, d->ids + p->prompt, p->plen, d->ids + p->rejected, p->rlen);
        t->buf.len[2 * i] = p->plen + p->clen;
        t->buf.len[2 * i + 1] = p->plen + p->rlen;
    }
    struct model_batch b = {2 * n, t->buf.len, t->buf.tokens, t->buf.targets};
    if (model_forward(m, &b, MODEL_TRAIN))
        return -1;
    at = 0;
    for (int i = 0; i < n; i++) {
        const struct dpo_pair *p = &d->pair[idx[i]];
        size_t c0 = at, r0 = at + (size_t)(p->plen + p->clen);
        /* the response's log-probs sit at positions plen-1 .. plen+len-2 */
        double pc = seq_sum(m->logp, c0 + (size_t)p->plen - 1, p->clen);
        double pr = seq_sum(m->logp, r0 + (size_t)p->plen - 1, p->rlen);
        struct dpo_terms o;
        dpo_pair_loss(&t->params, pc, pr, p->ref_chosen, p->ref_rejected, p->clen, p->rlen, &o);
        for (size_t k = c0; k < r0; k++)
            t->buf.dlogp[k] = t->buf.targets[k] >= 0 ? (float)(o.dpc * scale) : 0;
        for (size_t k = r0; k < r0 + (size_t)(p->plen + p->rlen); k++)
            t->buf.dlogp[k] = t->buf.targets[k] >= 0 ? (float)(o.dpr * scale) : 0;
        at = r0 + (size_t)(p->plen + p->rlen);
        train_metric_add(acc, "loss", o.loss);
        train_metric_add(acc, "rewards_chosen", o.reward_chosen);
        train_metric_add(acc, "rewards_rejected", o.reward_rejected);
        train_metric_add(acc, "reward_accuracy", o.reward_chosen > o.reward_rejected);
        train_metric_add(acc, "reward_margin", o.reward_chosen - o.reward_rejected);
        train_metric_add(acc, "logp_chosen", pc);
        train_metric_add(acc, "logp_rejected", pr);
    }
    acc->tokens += ntok;
    return model_backward(m, t->buf.dlogp, NULL, NULL);
}

void dpo_task_init(struct dpo_task *t, const struct dpo_data *data, const struct dpo_params *p)
{
    *t = (struct dpo_task){.params = *p, .data = data};
    t->task = (struct train_task){.name = "dpo", .n_examples = data->n, .data_hash = dpo_data_hash(data),
                                  .micro = dpo_micro, .ctx = t};
}

void dpo_task_free(struct dpo_task *t)
{
    train_batch_free(&t->buf);
}
