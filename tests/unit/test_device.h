/* The device a model test runs on: $RL_TEST_DEVICE (default cpu). tests/run
 * runs the parity tests again on "devsim", whose memory the host cannot
 * touch, and tests/gpu/run on "cuda"; such a test reads backend memory only
 * through host_copy. */
#ifndef RLFLOW_TEST_DEVICE_H
#define RLFLOW_TEST_DEVICE_H
#include <stdlib.h>

#include "backend.h"
#include "err.h"
#include "model.h"

static inline const char *test_device(void)
{
    const char *d = getenv("RL_TEST_DEVICE");
    return d && *d ? d : "cpu";
}

/* A malloc'd host copy of n floats of backend memory x. */
static inline float *host_copy(const struct backend *bk, const float *x, size_t n)
{
    float *h = rl_malloc((n ? n : 1) * sizeof *h);
    bk->download(h, x, n * sizeof *h);
    return h;
}

/* model_zero_grad over NaN gradients: whatever it leaves for the backward
 * to write must be written, or a comparison of the gradients fails. */
static inline void zero_grad_poisoned(struct model *m)
{
    float *nan = rl_malloc(m->n_params * sizeof *nan);
    for (size_t i = 0; i < m->n_params; i++)
        nan[i] = __builtin_nanf("");
    m->bk->upload(m->g_mem, nan, m->n_params * sizeof *nan);
    free(nan);
    model_zero_grad(m);
}
#endif
