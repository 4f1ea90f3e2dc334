/* The trainers' losses through the whole model against torch autograd
 * (tests/ref/train_ref.py; golden in tests/data/golden/train): the mean
 * DPO-family loss over a batch and the SFT token-mean NLL, and the gradient
 * of every parameter, in one micro-batch and with accumulation. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "dpo.h"
#include "err.h"
#include "safetensors.h"
#include "rm.h"
#include "sft.h"
#include "test_device.h"

static char dir[4096];

static int32_t *ids_of(json_t *a, int *n)
{
    *n = (int)json_array_size(a);
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    for (int i = 0; i < *n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

/* Relative norm of the difference, per tensor; the worst one. */
static double compare_grads(struct model *m, struct st_file *exp, const char *cas, char *worst_name, size_t wn)
{
    double worst = 0;
    float *grad = host_copy(m->bk, m->g_mem, m->n_params);
    for (int i = 0; i < m->n_params_tensors; i++) {
        const struct model_param *p = &m->params[i];
        char name[256];
        snprintf(name, sizeof name, "%s.grad.%s", cas, p->name);
        const struct st_tensor *t = st_find(exp, name);
        if (!t || (size_t)t->numel != p->numel) {
            free(grad);
            return INFINITY;
        }
        float *want = malloc(p->numel * sizeof *want);
        st_read_f32(exp, name, want, t->ndim, t->shape);
        double d = 0, s = 0;
        for (size_t k = 0; k < p->numel; k++) {
            double g = grad[p->offset + k];
            d += (g - want[k]) * (g - want[k]);
            s += (double)want[k] * want[k];
        }
        free(want);
        double rel = sqrt(d) / fmax(sqrt(s), 1e-30);
        if (harness_worse(rel, worst)) {
            worst = rel;
            snprintf(worst_name, wn, "%s", p->name);
        }
    }
    free(grad);
    return worst;
}

static double expected_loss(struct st_file *exp, const char *cas)
{
    char name[64];
    float v = NAN;
    int64_t shape[1] = {1};
    snprintf(name, sizeof name, "%s.loss", cas);
    st_read_f32(exp, name, &v, 1, shape);
    return v;
}

static void run_case(struct model *m, struct train_task *task, struct st_file *exp, const char *cas, int micro)
{
    struct train_metrics acc = {0};
    size_t n = task->n_examples, idx[16];
    double norm = 0;
    for (size_t i = 0; i < n; i++) {
        idx[i] = i;
        norm += task->weight ? task->weight(task, i) : 1;
    }
    model_zero_grad(m);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i += (size_t)micro) {
        int k = (int)(n - i < (size_t)micro ? n - i : (size_t)micro);
        rc = task->micro(task, m, idx + i, k, 1.0 / norm, &acc);
    }
    char label[128], worst_name[128] = "";
    snprintf(label, sizeof label, "%s loss equals torch (micro-batch %d)", cas, micro);
    double loss = acc.sum[0] / norm, want = expected_loss(exp, cas);
    CHECKF(label, rc == 0 && fabs(loss - want) <= 1e-5 * fmax(1, fabs(want)), "%.9g vs %.9g (%s)", loss, want,
           rc ? rl_errmsg() : "");
    double worst = compare_grads(m, exp, cas, worst_name, sizeof worst_name);
    snprintf(label, sizeof label, "%s: every parameter gradient equals torch within 1e-4 (micro-batch %d)", cas, micro);
    CHECKF(label, worst <= 1e-4, "worst relative error %.3g in %s", worst, worst_name);
}

/* The Bradley-Terry task on a reward model, and rm_score on the same sequences. */
static void test_rm(const char *root)
{
    char d[4200], path[4300];
    snprintf(d, sizeof d, "%s/tests/data/golden/train_rm", root);
    snprintf(path, sizeof path, "%s/data.json", d);
    json_error_t je;
    json_t *data = json_load_file(path, 0, &je);
    snprintf(path, sizeof path, "%s/expected.safetensors", d);
    struct st_file *exp = st_open(path);
    struct model *m = rm_open(d, test_device(), 0);
    if (!data || !exp || !m) {
        harness_report(0, "reward model golden loads", "%s", data ? rl_errmsg() : je.text);
        return;
    }
    struct rm_data pairs = {0};
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(data, "pairs"), i, p) {
        int np, nc, nr;
        int32_t *a = ids_of(json_object_get(p, "prompt"), &np), *b = ids_of(json_object_get(p, "chosen"), &nc),
                *c = ids_of(json_object_get(p, "rejected"), &nr);
        rm_data_add(&pairs, a, np, b, nc, c, nr, json_number_value(json_object_get(p, "margin")), 0);
        free(a); free(b); free(c);
    }
    struct rm_task t;
    rm_task_init(&t, &pairs, NULL, 0);
    run_case(m, &t.task, exp, "rm", 6);
    run_case(m, &t.task, exp, "rm", 4);
    /* every sequence scored alone and all in one batch equal torch's scores */
    const struct st_tensor *want = st_find(exp, "rm.scores");
    float ws[64];
    int64_t shape[1] = {want ? want->numel : 0};
    double alone[64], batch[64], worst = 0, diff_batch = 0;
    int len[64], *tok = malloc(pairs.n_ids * sizeof *tok);
    for (size_t k = 0; k < pairs.n_ids; k++) tok[k] = pairs.ids[k];
    size_t off = 0;
    for (size_t k = 0; k < 2 * pairs.n; k++) {
        const struct rm_pair *q = &pairs.pair[k / 2];
        len[k] = k % 2 ? q->rlen : q->clen;
        rm_score(m, 1, &len[k], tok + (k % 2 ? q->rejected : q->chosen), &alone[k]);
        (void)off;
    }
    int *packed = malloc(pairs.n_ids * sizeof *packed);
    size_t at = 0;
    for (size_t k = 0; k < 2 * pairs.n; k++) {
        const struct rm_pair *q = &pairs.pair[k / 2];
        memcpy(packed + at, tok + (k % 2 ? q->rejected : q->chosen), (size_t)len[k] * sizeof *packed);
        at += (size_t)len[k];
    }
    rm_score(m, (int)(2 * pairs.n), len, packed, batch);
    st_read_f32(exp, "rm.scores", ws, 1, shape);
    for (size_t k = 0; k < 2 * pairs.n; k++) {
        double e = fabs(alone[k] - ws[k]) / fmax(1, fabs(ws[k]));
        if (harness_worse(e, worst)) worst = e;
        if (alone[k] != batch[k]) diff_batch++;
    }
    CHECKF("rewards of unequal-length sequences equal torch within 1e-5", want && worst < 1e-5, "worst %.3g", worst);
    CHECKF("a sequence's reward is the same alone and in a batch (bitwise)", diff_batch == 0, "%.0f differ", diff_batch);
    free(tok);
    free(packed);
    rm_task_free(&t);
    rm_data_free(&pairs);
    model_close(m);
    st_close(exp);
    json_decref(data);
}

int main(void)
{
    const char *root = getenv("RL_ROOT");
    snprintf(dir, sizeof dir, "%s/tests/data/golden/train", root ? root : ".");
    char path[4200];
    snprintf(path, sizeof path, "%s/data.json", dir);
    json_error_t je;
    json_t *data = json_load_file(path, 0, &je);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    struct st_file *exp = st_open(path);
    struct model *m = model_open(dir, test_device());
    if (!data || !exp || !m) {
        harness_report(0, "golden model and data load", "%s", data ? rl_errmsg() : je.text);
        return harness_exit();
    }
    struct dpo_data pairs = {0};
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(data, "pairs"), i, p) {
        int np, nc, nr;
        int32_t *a = ids_of(json_object_get(p, "prompt"), &np), *b = ids_of(json_object_get(p, "chosen"), &nc),
                *c = ids_of(json_object_get(p, "rejected"), &nr);
        dpo_data_add(&pairs, a, np, b, nc, c, nr, json_number_value(json_object_get(p, "ref_chosen")),
                     json_number_value(json_object_get(p, "ref_rejected")), 0, 0);
        free(a); free(b); free(c);
    }
    struct sft_data sft = {0};
    json_array_foreach(json_object_get(data, "sft"), i, p) {
        int np, nr;
        int32_t *a = ids_of(json_object_get(p, "prompt"), &np), *b = ids_of(json_object_get(p, "response"), &nr);
        sft_data_add(&sft, a, np, b, nr, 0, 0);
        free(a); free(b);
    }
    static const struct { const char *name; struct dpo_params p; } cases[] = {
        {"sigmoid", {DPO_SIGMOID, 0.1, 0, 0}}, {"cdpo", {DPO_SIGMOID, 0.5, 0.2, 0}},
        {"ipo", {DPO_IPO, 0.3, 0, 0}}, {"hinge", {DPO_HINGE, 0.7, 0, 0}}, {"rpo", {DPO_SIGMOID, 0.1, 0, 0.5}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        struct dpo_task t;
        dpo_task_init(&t, &pairs, &cases[k].p);
        run_case(m, &t.task, exp, cases[k].name, 5);
        if (k == 0)
            run_case(m, &t.task, exp, cases[k].name, 2);   /* accumulation over 3 micro-batches */
        dpo_task_free(&t);
    }
    struct sft_task st;
    sft_task_init(&st, &sft, 0);
    run_case(m, &st.task, exp, "sft", 4);
    run_case(m, &st.task, exp, "sft", 3);
    sft_task_free(&st);
    dpo_data_free(&pairs);
    sft_data_free(&sft);
    model_close(m);
    st_close(exp);
    json_decref(data);
    test_rm(root ? root : ".");
    return harness_exit();
}
