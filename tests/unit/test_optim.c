/* AdamW, clipping, schedules and accumulation against hand-computed values
 * (the ten-step comparison with torch.optim.AdamW is in test_model_parity). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../harness.h"
#include "err.h"
#include "optim.h"

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(1, fabs(b)); }

static void test_schedules(void)
{
    struct lr_schedule s = {.kind = LR_LINEAR, .lr = 1.0, .warmup = 4, .total = 12};
    CHECK("linear: 0 at step 0 (warmup)", lr_at(&s, 0) == 0);
    CHECK("linear: step/warmup during warmup", close_to(lr_at(&s, 2), 0.5, 1e-12));
    CHECK("linear: peak after warmup", close_to(lr_at(&s, 4), 1.0, 1e-12));
    CHECK("linear: decays to (total-step)/(total-warmup)", close_to(lr_at(&s, 10), 2.0 / 8, 1e-12));
    CHECK("linear: 0 at and after total", lr_at(&s, 12) == 0 && lr_at(&s, 20) == 0);
    s.kind = LR_COSINE;
    CHECK("cosine: half way = half the peak", close_to(lr_at(&s, 8), 0.5, 1e-12));
    CHECK("cosine: quarter way", close_to(lr_at(&s, 6), 0.5 * (1 + cos(M_PI * 0.25)), 1e-12));
    CHECK("cosine: 0 at total", fabs(lr_at(&s, 12)) < 1e-12);
    s.kind = LR_CONSTANT;
    CHECK("constant: warmup then flat", close_to(lr_at(&s, 1), 0.25, 1e-12) && lr_at(&s, 100) == 1.0);
    s.warmup = 0;
    CHECK("no warmup: full rate at step 0", lr_at(&s, 0) == 1.0);
    enum lr_kind k;
    CHECK("parse: cosine", lr_kind_parse("cosine", &k) == 0 && k == LR_COSINE);
    CHECK("parse: unknown names the value", lr_kind_parse("exp", &k) < 0 && strstr(rl_errmsg(), "'exp'"));
}

static void test_clip(void)
{
    const struct backend *bk = &backend_cpu;
    float g[4] = {3, 0, 4, 0};
    double n = clip_grad_norm(bk, g, 4, 1.0);
    CHECK("clip: returns the norm before clipping", close_to(n, 5, 1e-12));
    CHECK("clip: scales by max/(norm+1e-6)", close_to(g[0], 3 / (5 + 1e-6), 1e-6) && close_to(g[2], 4 / (5 + 1e-6), 1e-6));
    float h[2] = {0.3f, 0.4f};
    clip_grad_norm(bk, h, 2, 1.0);
    CHECK("clip: below the limit leaves gradients alone", h[0] == 0.3f && h[1] == 0.4f);
    float bad[2] = {NAN, 1};
    CHECK("clip: a non-finite norm is reported", !isfinite(clip_grad_norm(bk, bad, 2, 1.0)) && bad[1] == 1);
}

static void test_adamw(void)
{
    const struct backend *bk = &backend_cpu;
    struct adamw_cfg c = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f};
    struct adamw *o = adamw_new(bk, 2, &c);
    float w[2] = {1.0f, -2.0f}, g[2] = {0.5f, -0.25f};
    adamw_step(o, w, g, 0.01f);
    /* step 1: m = 0.1 g, v = 0.001 g^2; mhat/sqrt(vhat) = sign(g) (up to eps) */
    double w0 = 1.0 * (1 - 0.01 * 0.1) - 0.01 * 0.5 / (0.5 + 1e-8);
    double w1 = -2.0 * (1 - 0.01 * 0.1) + 0.01 * 0.25 / (0.25 + 1e-8);
    CHECKF("adamw: first step = decay then lr * sign(g)", close_to(w[0], w0, 1e-6) && close_to(w[1], w1, 1e-6),
           "%.9g %.9g vs %.9g %.9g", w[0], w[1], w0, w1);
    float g2[2] = {-0.5f, -0.25f};
    adamw_step(o, w, g2, 0.01f);
    double m0 = 0.9 * 0.05 + 0.1 * -0.5, v0 = 0.999 * 0.00025 + 0.001 * 0.25;
    double bc1 = 1 - 0.81, bc2 = 1 - 0.999 * 0.999;
    double e0 = w0 * (1 - 0.001) - 0.01 / bc1 * m0 / (sqrt(v0) / sqrt(bc2) + 1e-8);
    CHECKF("adamw: second step with bias correction", close_to(w[0], e0, 1e-6), "%.9g vs %.9g", w[0], e0);
    CHECK("adamw: step counter", o->step == 2);
    adamw_free(o);
}

/* Clipping folded into the update (the trainers' way) must be the separate
 * scale-then-step bit for bit: the same fp32 product g * coef feeds both. */
static void test_clip_folded(void)
{
    const struct backend *bk = &backend_cpu;
    enum { N = 1001 };
    struct adamw_cfg c = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    struct adamw *a = adamw_new(bk, N, &c), *b = adamw_new(bk, N, &c);
    static float wa[N], wb[N], ga[N], gb[N];
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        wa[i] = wb[i] = (float)((s >> 40) % 2001) / 1000.0f - 1.0f;
    }
    int clipped = 0;
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < N; i++)
            ga[i] = gb[i] = sinf((float)(i * (k + 1))) * (k == 1 ? 1e-3f : 1.0f);
        double na = clip_grad_norm(bk, ga, N, 1.0);
        adamw_step(a, wa, ga, 0.01f);
        double nb = grad_norm(bk, gb, N);
        float coef = clip_coef(nb, 1.0);
        clipped += coef < 1;
        adamw_begin(b);
        adamw_update(b, 0, 400, wb, gb, coef, 0.01f, c.weight_decay);
        adamw_update(b, 400, N - 400, wb, gb, coef, 0.01f, c.weight_decay);
        CHECK("clip folded: the same norm", na == nb);
    }
    CHECK("clip folded: two of three steps clipped", clipped == 2);
    CHECK("clip folded: weights bit for bit", !memcmp(wa, wb, sizeof wa));
    CHECK("clip folded: moments bit for bit", !memcmp(a->m, b->m, sizeof wa) && !memcmp(a->v, b->v, sizeof wa));
    CHECK("clip_coef: capped at 1", clip_coef(0.5, 1.0) == 1.0f && clip_coef(0, 1.0) == 1.0f);
    CHECK("clip_coef: max / (norm + 1e-6)", clip_coef(4, 1.0) == (float)(1.0 / (4 + 1e-6)));
    adamw_free(a);
    adamw_free(b);
}

static void test_state(void)
{
    const struct backend *bk = &backend_cpu;
    struct adamw_cfg c = ADAMW_DEFAULTS;
    struct adamw *a = adamw_new(bk, 3, &c), *b = adamw_new(bk, 3, &c), *small = adamw_new(bk, 2, &c);
    float w[3] = {1, 2, 3}, g[3] = {0.1f, -0.2f, 0.3f}, w2[3] = {1, 2, 3};
    adamw_step(a, w, g, 0.1f);
    adamw_step(a, w, g, 0.1f);
    char path[64];
    snprintf(path, sizeof path, "/tmp/rlflow-adamw-%d.safetensors", (int)getpid());
    int rc = adamw_save(a, path);
    CHECKF("state: saves", rc == 0, "%s", rl_errmsg());
    CHECKF("state: loads", adamw_load(b, path) == 0 && b->step == 2, "%s", rl_errmsg());
    memcpy(w2, w, sizeof w);
    adamw_step(a, w, g, 0.1f);
    adamw_step(b, w2, g, 0.1f);
    CHECK("state: a resumed optimizer continues identically", !memcmp(w, w2, sizeof w));
    CHECK("state: a different parameter count is refused", adamw_load(small, path) < 0 && strstr(rl_errmsg(), "adamw"));
    unlink(path);
    adamw_free(a);
    adamw_free(b);
    adamw_free(small);
}

int main(void)
{
    test_state();
    test_schedules();
    test_clip();
    test_adamw();
    test_clip_folded();
    return harness_exit();
}
