/* The C model against the PyTorch reference (tests/ref/llama_ref.py): for each
 * case of tests/data/golden/ the logits and log-probs (1e-5 relative), every
 * parameter gradient (1e-4 relative norm of the difference), the score head,
 * and ten of the trainers' AdamW steps (train_adamw_step: decay on matrices
 * only, clipping folded in) with a warmup+cosine schedule (1e-5).
 *   test_model_parity [REFDIR [CASEDIR...]]
 *       REFDIR/CASE.safetensors replaces the committed CASE/ref.safetensors
 *       (live runs); CASEDIRs (model + inputs.json) replace the golden cases. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "err.h"
#include "model.h"
#include "optim.h"
#include "safetensors.h"
#include "test_device.h"
#include "train.h"

static const char *CASES[] = {"mha_untied", "gqa_tied", "qwen2_bias", "llama3_rope", "score_head"};

/* ||a - b|| / ||b|| */
static double rel_norm(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

static const float *ref_tensor(const struct st_file *f, const char *name, size_t n)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t || t->dtype != ST_F32 || (size_t)t->numel != n)
        return NULL;
    return t->data;
}

static int *ref_ints(const struct st_file *f, const char *name, size_t *n)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t || t->dtype != ST_F32)
        return NULL;
    int *v = rl_malloc(t->numel * sizeof *v + 1);
    for (int64_t i = 0; i < t->numel; i++)
        v[i] = (int)((const float *)t->data)[i];
    *n = (size_t)t->numel;
    return v;
}

static void check_grads(const char *c, struct model *m, const struct st_file *ref)
{
    char name[160], key[160];
    double worst = 0;
    const char *worst_name = "";
    int missing = 0;
    float *grad = host_copy(m->bk, m->g_mem, m->n_params);
    for (int i = 0; i < m->n_params_tensors; i++) {
        const struct model_param *p = &m->params[i];
        snprintf(key, sizeof key, "grad.%s", p->name);
        const float *g = ref_tensor(ref, key, p->numel);
        if (!g) {
            missing++;
            continue;
        }
        double e = rel_norm(grad + p->offset, g, p->numel);
        if (harness_worse(e, worst)) {
            worst = e;
            worst_name = p->name;
        }
    }
    free(grad);
    fprintf(stderr, "%s: worst gradient %s: %.3g\n", c, worst_name, worst);
    snprintf(name, sizeof name, "%s: every gradient tensor (%d) within 1e-4", c, m->n_params_tensors);
    CHECKF(name, missing == 0 && worst <= 1e-4, "%d missing; worst %s: %.3g", missing, worst_name, worst);
}

/* The recipe of llama_ref.py's docstring, on the reference's gradients. */
static void check_adamw(const char *c, struct model *m, const struct st_file *ref)
{
    char name[160], key[160];
    float *g0 = rl_malloc(m->n_params * sizeof *g0);
    for (int i = 0; i < m->n_params_tensors; i++) {
        const struct model_param *p = &m->params[i];
        snprintf(key, sizeof key, "grad.%s", p->name);
        const float *g = ref_tensor(ref, key, p->numel);
        if (g)
            memcpy(g0 + p->offset, g, p->numel * sizeof *g);
    }
    struct adamw_cfg cfg = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    struct adamw *o = adamw_new(m->bk, m->n_params, &cfg);
    struct lr_schedule s = {.kind = LR_COSINE, .lr = 1e-2, .warmup = 3, .total = 10};
    float *gk = rl_malloc(m->n_params * sizeof *gk);
    for (int k = 0; k < 10; k++) {
        for (size_t j = 0; j < m->n_params; j++)
            gk[j] = g0[j] * (float)(1 - 0.3 * k);
        m->bk->upload(m->g_mem, gk, m->n_params * sizeof *gk);
        float coef = clip_coef(grad_norm(m->bk, m->g_mem, m->n_params), 0.05);
        train_adamw_step(o, m, (float)lr_at(&s, k), cfg.weight_decay, coef);
    }
    free(gk);
    float *wh = host_copy(m->bk, m->w_mem, m->n_params);
    double worst = 0;
    int missing = 0;
    for (int i = 0; i < m->n_params_tensors; i++) {
        const struct model_param *p = &m->params[i];
        snprintf(key, sizeof key, "adamw.%s", p->name);
        const float *w = ref_tensor(ref, key, p->numel);
        if (!w) {
            missing++;
            continue;
        }
        double e = harness_max_rel_err(wh + p->offset, w, p->numel);
        if (harness_worse(e, worst))
            worst = e;
    }
    free(wh);
    fprintf(stderr, "%s: AdamW weights after ten steps: %.3g\n", c, worst);
    snprintf(name, sizeof name, "%s: ten AdamW steps (decay groups, clip, warmup+cosine) within 1e-5", c);
    CHECKF(name, missing == 0 && worst <= 1e-5, "%d missing; worst %.3g", missing, worst);
    adamw_free(o);
    free(g0);
}

static void run_case(const char *golden, const char *refdir, const char *c)
{
    char dir[512], path[600], name[160];
    if (golden)
        snprintf(dir, sizeof dir, "%s/%s", golden, c);
    else
        snprintf(dir, sizeof dir, "%s", c);
    const char *base = strrchr(c, '/');
    c = base ? base + 1 : c;
    if (refdir)
        snprintf(path, sizeof path, "%s/%s.safetensors", refdir, c);
    else
        snprintf(path, sizeof path, "%s/ref.safetensors", dir);
    struct model *m = model_open(dir, test_device());
    struct st_file *ref = st_open(path);
    snprintf(name, sizeof name, "%s: model and reference load", c);
    CHECKF(name, m && ref, "%s", rl_errmsg());
    if (!m || !ref) {
        model_close(m);
        st_close(ref);
        return;
    }
    size_t T = 0, ns = 0, nt = 0;
    int *tokens = ref_ints(ref, "tokens", &T), *lens = ref_ints(ref, "lens", &ns);
    int *targets = ref_ints(ref, "targets", &nt);
    bool lm = m->cfg.head == HEAD_LM;
    struct model_batch b = {.n_seq = (int)ns, .len = lens, .tokens = tokens, .targets = lm ? targets : NULL};
    int rc = model_forward(m, &b, MODEL_TRAIN | (lm ? MODEL_LOGITS : 0));
    snprintf(name, sizeof name, "%s: forward runs", c);
    CHECKF(name, rc == 0, "%s", rl_errmsg());
    if (rc == 0 && lm) {
        const float *lg = ref_tensor(ref, "logits", T * m->V), *lp = ref_tensor(ref, "logp", T);
        double e1 = lg ? harness_max_rel_err(m->logits, lg, T * m->V) : 1;
        double e2 = lp ? harness_max_rel_err(m->logp, lp, T) : 1;
        fprintf(stderr, "%s: logits %.3g, log-probs %.3g\n", c, e1, e2);
        snprintf(name, sizeof name, "%s: logits within 1e-5", c);
        CHECKF(name, e1 <= 1e-5, "max rel err %.3g", e1);
        snprintf(name, sizeof name, "%s: per-token log-probs within 1e-5", c);
        CHECKF(name, e2 <= 1e-5, "max rel err %.3g", e2);
        const float *dlogp = ref_tensor(ref, "dlogp", T);
        zero_grad_poisoned(m);
        rc = dlogp ? model_backward(m, dlogp, NULL, NULL) : -1;
        snprintf(name, sizeof name, "%s: backward from d loss / d logp", c);
        CHECKF(name, rc == 0, "%s", dlogp ? rl_errmsg() : "no dlogp in the reference");
    } else if (rc == 0) {
        int nl = m->cfg.num_labels;
        const float *sc = ref_tensor(ref, "score", ns * nl), *ds = ref_tensor(ref, "dscore", ns * nl);
        double e = sc ? harness_max_rel_err(m->scores, sc, ns * nl) : 1;
        fprintf(stderr, "%s: scores %.3g\n", c, e);
        snprintf(name, sizeof name, "%s: scores within 1e-5", c);
        CHECKF(name, e <= 1e-5, "max rel err %.3g", e);
        zero_grad_poisoned(m);
        rc = ds ? model_backward(m, NULL, ds, NULL) : -1;
        snprintf(name, sizeof name, "%s: backward from d loss / d score", c);
        CHECKF(name, rc == 0, "%s", ds ? rl_errmsg() : "no dscore in the reference");
    }
    if (rc == 0) {
        check_grads(c, m, ref);
        check_adamw(c, m, ref);
    }
    free(tokens);
    free(lens);
    free(targets);
    st_close(ref);
    model_close(m);
}

int main(int argc, char **argv)
{
    const char *root = getenv("RL_ROOT");
    char golden[512];
    snprintf(golden, sizeof golden, "%s/tests/data/golden", root ? root : ".");
    if (argc > 2)
        for (int i = 2; i < argc; i++)
            run_case(NULL, argv[1], argv[i]);
    else
        for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++)
            run_case(golden, argc > 1 ? argv[1] : NULL, CASES[i]);
    return harness_exit();
}
