#include "sft.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

void sft_data_add(struct sft_data *d, const int32_t *prompt, int plen, const int32_t *resp, int rlen,
                  int max_len, int max_prompt)
{
    int skip;
    d->truncated += train_fit(&plen, &skip, &rlen, 1, max_len, max_prompt);
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 256;
        d->ex = rl_realloc(d->ex, d->cap * sizeof *d->ex);
    }
    struct sft_example *e = &d->ex[d->n++];
    e->plen = plen;
    e->rlen = rlen;
    e->prompt = train_ids_append(&d->ids, &d->n_ids, &d->cap_ids, prompt + skip, plen);
    e->response = train_ids_append(&d->ids, &d->n_ids, &d->cap_ids, resp, rlen);
}

void sft_data_free(struct sft_data *d)
{
    free(d->ex);
    free(d->ids);
    *d = (struct sft_data){0};
}

static uint64_t data_hash(const struct sft_data *d)
{
    uint64_t h = train_hash(TRAIN_HASH_INIT, d->ids, d->n_ids * sizeof *d->ids);
    for (size_t i = 0; i < d->n; i++) {
        int lens[2] = {d->ex[i].plen, d->ex[i].rlen};
        h = train_hash(h, lens, sizeof lens);
    }
    return h;
}

static double sft_weight(struct train_task *task, size_t i)
{
    return ((struct sft_task *)task)->data->ex[i].rlen;
}

static size_t sft_tokens(struct train_task *task, size_t i)
{
    const struct sft_example *e = &((struct sft_task *)task)->data->ex[i];
    return (size_t)(e->plen + e->rlen);
}

/* loss = -sum(logp of response tokens) / (response tokens in the step) */
static int sft_micro(struct train_task *task, struct model *m, const size_t *idx, int n, double scale,
                     struct train_metrics *acc)
{
    struct sft_task *t = (struct sft_task *)task;
    const struct sft_data *d = t->data;
    size_t ntok = 0, at = 0;
    for (int i = 0; i < n; i++)
        ntok += sft_tokens(task, idx[i]);
    train_batch_reserve(&t->buf, ntok, (size_t)n);
    for (int i = 0; i < n; i++) {
        const struct sft_example *e = &d->ex[idx[i]];
        int len = e->plen + e->rlen;
        for (int k = 0; k < len; k++) {
            t->buf.tokens[at + k] = k < e->plen ? d->ids[e->prompt + k] : d->ids[e->response + k - e->plen];
            bool target = k + 1 >= e->plen && k + 1 < len;
            t->buf.targets[at + k] = target ? d->ids[e->response + k + 1 - e->plen] : -1;
            t->buf.dlogp[at + k] = target ? (float)-scale : 0;
        }
        t->buf.len[i] = len;
        at += (size_t)len;
    }
    struct model_batch b = {n, t->buf.len, t->buf.tokens, t->buf.targets};
    if (model_forward(m, &b, MODEL_TRAIN))
        return -1;
    double nll = 0;
    for (size_t k = 0; k < ntok; k++)
        nll -= t->buf.targets[k] >= 0 ? m->logp[k] : 0;
    train_metric_add(acc, "loss", nll);
    acc->tokens += ntok;
    return model_backward(m, t->buf.dlogp, NULL, NULL);
}

void sft_task_init(struct sft_task *t, const struct sft_data *data, size_t pack_tokens)
{
    *t = (struct sft_task){.data = data};
    t->task = (struct train_task){.name = "sft", .n_examples = data->n, .data_hash = data_hash(data),
                                  .micro = sft_micro, .weight = sft_weight,
                                  .tokens = pack_tokens ? sft_tokens : NULL, .micro_tokens = pack_tokens,
                                  .ctx = t};
}

void sft_task_free(struct sft_task *t)
{
    train_batch_free(&t->buf);
}
