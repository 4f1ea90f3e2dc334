/* Optimisation: AdamW (torch.optim.AdamW semantics: decoupled weight decay,
 * bias correction), global gradient-norm clipping (torch.nn.utils.
 * clip_grad_norm_), learning-rate schedules with warmup (the Hugging Face
 * get_{constant,linear,cosine}_schedule_with_warmup formulas). Gradient
 * accumulation needs no function here: the trainer weights each
 * micro-batch's loss by 1/(the step's total), so the backward's += leaves
 * the average (lib/train.c one_step). Parameters and gradients are flat
 * fp32 arrays on a backend (a model's w_mem / g_mem). */
#ifndef RLFLOW_OPTIM_H
#define RLFLOW_OPTIM_H
#include <stdbool.h>
#include <stddef.h>

#include "backend.h"

struct adamw_cfg {
    float beta1, beta2, eps, weight_decay;
};
#define ADAMW_DEFAULTS ((struct adamw_cfg){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f})

struct adamw {
    const struct backend *bk;
    struct adamw_cfg cfg;
    size_t n;
    float *m, *v;       /* first and second moments, one allocation each */
    long step;          /* steps taken (bias correction uses step after increment) */
};

/* NULL with rl_err on out of memory. */
struct adamw *adamw_new(const struct backend *bk, size_t n, const struct adamw_cfg *cfg);
void adamw_free(struct adamw *o);
/* One step over all n parameters with learning rate lr. */
void adamw_step(struct adamw *o, float *w, const float *g, float lr);
/* The same in pieces, e.g. to exempt norms and biases from weight decay:
 * adamw_begin(o); then adamw_update() for every [off, off+n) range once.
 * The gradient is g * grad_scale: a clipping coefficient (clip_coef) applied
 * here, in the update's one pass, instead of by a pass of its own. */
void adamw_begin(struct adamw *o);
void adamw_update(struct adamw *o, size_t off, size_t n, float *w, const float *g, float grad_scale, float lr,
                  float weight_decay);

/* Trainer state beside a checkpoint (DESIGN.md: a killed run resumes):
 * a safetensors file with adamw.exp_avg [n], adamw.exp_avg_sq [n] and
 * adamw.step [1], written atomically. Loading checks n. */
int adamw_save(const struct adamw *o, const char *path);
int adamw_load(struct adamw *o, const char *path);

/* L2 norm of all n gradients (in double). */
double grad_norm(const struct backend *bk, const float *g, size_t n);
/* torch's clipping coefficient for a gradient of global norm `norm`:
 * max_norm / (norm + 1e-6), capped at 1, in fp32. */
float clip_coef(double norm, double max_norm);
/* Scale gradients by clip_coef so that their global norm is at most
 * max_norm; returns the norm before clipping. A non-finite norm leaves g
 * untouched (the caller must stop). */
double clip_grad_norm(const struct backend *bk, float *g, size_t n, double max_norm);

enum lr_kind { LR_CONSTANT, LR_LINEAR, LR_COSINE };
struct lr_schedule {
    enum lr_kind kind;
    double lr;          /* peak learning rate */
    long warmup;        /* steps of linear warmup from 0 */
    long total;         /* training steps (linear/cosine reach 0 here) */
};
/* Learning rate for 0-based step (the rate used by the step'th update). */
double lr_at(const struct lr_schedule *s, long step);
/* "constant", "linear", "cosine"; -1 with rl_err naming the value. */
int lr_kind_parse(const char *name, enum lr_kind *k);

#endif
