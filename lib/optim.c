/* AdamW, clipping, schedules, accumulation (see optim.h). The per-element
 * update is the backend's; this file keeps the state and the scalars. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "optim.h"
#include "safetensors.h"

struct adamw *adamw_new(const struct backend *bk, size_t n, const struct adamw_cfg *cfg)
{
    struct adamw *o = rl_calloc(1, sizeof *o);
    o->bk = bk;
    o->cfg = *cfg;
    o->n = n;
    o->m = bk->alloc(n * sizeof(float));
    o->v = bk->alloc(n * sizeof(float));
    if (!o->m || !o->v) {
        adamw_free(o);
        return rl_err("out of memory for AdamW moments of %zu parameters", n), NULL;
    }
    return o;
}

void adamw_free(struct adamw *o)
{
    if (!o)
        return;
    o->bk->free(o->m);
    o->bk->free(o->v);
    free(o);
}

void adamw_begin(struct adamw *o) { o->step++; }

int adamw_save(const struct adamw *o, const char *path)
{
    if (o->step > (1L << 24))
        return rl_err("%s: step %ld does not fit the state file's fp32 counter", path, o->step);
    float step = (float)o->step;
    struct st_out_tensor t[3] = {
        {.name = "adamw.exp_avg", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)o->n}, .data = o->m},
        {.name = "adamw.exp_avg_sq", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)o->n}, .data = o->v},
        {.name = "adamw.step", .dtype = ST_F32, .ndim = 1, .shape = {1}, .data = &step},
    };
    return st_write(path, t, 3);
}

int adamw_load(struct adamw *o, const char *path)
{
    struct st_file *f = st_open(path);
    if (!f)
        return -1;
    int64_t n = (int64_t)o->n, one = 1;
    float step = 0;
    int rc = st_read_f32(f, "adamw.exp_avg", o->m, 1, &n);
    if (rc == 0)
        rc = st_read_f32(f, "adamw.exp_avg_sq", o->v, 1, &n);
    if (rc == 0)
        rc = st_read_f32(f, "adamw.step", &step, 1, &one);
    st_close(f);
    if (rc < 0)
        return rl_err_prefix("%s", path);
    if (!(step >= 0 && step <= (float)(1L << 24)))
        return rl_err("%s: adamw.step %g is not a step count", path, step);
    o->step = (long)step;
    return 0;
}

void adamw_update(struct adamw *o, size_t off, size_t n, float *w, const float *g, float grad_scale, float lr,
                  float weight_decay)
{
    /* bias corrections in double from the step count, as torch computes them */
    double bc1 = 1.0 - pow(o->cfg.beta1, (double)o->step);
    double bc2 = 1.0 - pow(o->cfg.beta2, (double)o->step);
    o->bk->adamw(w + off, g + off, grad_scale, o->m + off, o->v + off, n, lr, o->cfg.beta1, o->cfg.beta2,
                 o->cfg.eps, weight_decay, bc1, sqrt(bc2));
}

void adamw_step(struct adamw *o, float *w, const float *g, float lr)
{
    adamw_begin(o);
    adamw_update(o, 0, o->n, w, g, 1.0f, lr, o->cfg.weight_decay);
}

double grad_norm(const struct backend *bk, const float *g, size_t n) { return sqrt(bk->sumsq(g, n)); }

float clip_coef(double norm, double max_norm)
{
    double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}

double clip_grad_norm(const struct backend *bk, float *g, size_t n, double max_norm)
{
    double norm = grad_norm(bk, g, n);
    if (!isfinite(norm))
        return norm;
    float coef = clip_coef(norm, max_norm);
    if (coef < 1.0f)
        bk->scale(g, coef, n);
    return norm;
}

double lr_at(const struct lr_schedule *s, long step)
{
    if (step < s->warmup)
        return s->lr * (double)step / (double)(s->warmup > 1 ? s->warmup : 1);
    long span = s->total - s->warmup > 1 ? s->total - s->warmup : 1;
    double progress = (double)(step - s->warmup) / (double)span;
    switch (s->kind) {
    case LR_CONSTANT:
        return s->lr;
    case LR_LINEAR:
        return s->lr * fmax(0.0, 1.0 - progress);
    case LR_COSINE:
        return s->lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
    }
    return s->lr;
}

int lr_kind_parse(const char *name, enum lr_kind *k)
{
    static const char *names[] = {"constant", "linear", "cosine"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, names[i])) {
            *k = (enum lr_kind)i;
            return 0;
        }
    return rl_err("learning-rate schedule '%s': expected constant, linear or cosine", name);
}
