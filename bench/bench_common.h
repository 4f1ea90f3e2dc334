/* Shared by the benchmarks: wall time, peak memory, and the sgemm rate of
 * these cores measured in the same run (the ceiling every ratio is against). */
#ifndef RLFLOW_BENCH_COMMON_H
#define RLFLOW_BENCH_COMMON_H
#include <cblas.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline double bench_peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* Best of `reps` M x N x K sgemm calls (B transposed: a linear layer's shape)
 * through OpenBLAS with its current thread count. */
static inline double bench_sgemm_gflops(int M, int N, int K, int reps)
{
    float *a = malloc((size_t)M * K * 4), *b = malloc((size_t)N * K * 4), *c = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < (size_t)N * K; i++) b[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        double t = bench_now() - t0;
        if (t < best) best = t;
    }
    free(a), free(b), free(c);
    return 2.0 * M * N * K / best / 1e9;
}

#include "config.h"
#include "err.h"
#include "model.h"
#include "rng.h"

/* N(0, 0.02) weights for m drawn from r. A device's are one block of 16M
 * draws uploaded again and again: drawing a 1B model's one by one takes 14 s
 * on the development machine, and a benchmark's speed does not depend on
 * the values. */
static inline void bench_random_weights(struct model *m, struct rng *r)
{
    size_t chunk = m->bk->host ? m->n_params : (size_t)1 << 24;
    chunk = chunk < m->n_params ? chunk : m->n_params;
    float *h = m->bk->host ? m->w_mem : malloc(chunk * sizeof *h);
    for (size_t i = 0; i < chunk; i++)
        h[i] = 0.02f * rng_normal(r);
    for (size_t off = 0; !m->bk->host && off < m->n_params; off += chunk) {
        size_t n = m->n_params - off < chunk ? m->n_params - off : chunk;
        m->bk->upload(m->w_mem + off, h, n * sizeof *h);
    }
    if (!m->bk->host)
        free(h);
}

/* A model of the shape in cfg_path (layers > 0: that many layers; score: a
 * one-label score head instead of the LM head) with bench_random_weights,
 * on `threads` threads, on `device`. Exits on error. */
static inline struct model *bench_model_on(const char *device, const char *cfg_path, int layers, bool score,
                                           int threads, struct rng *r)
{
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    struct model_config cfg;
    if (config_load(cfg_path, &cfg))
        rl_die_err();
    if (layers)
        cfg.num_hidden_layers = layers;
    if (score) {
        cfg.head = HEAD_SCORE;
        cfg.num_labels = 1;
    }
    struct model *m = model_new(&cfg, device);
    if (!m)
        rl_die_err();
    bench_random_weights(m, r);
    return m;
}

static inline struct model *bench_model(const char *cfg_path, int layers, bool score, int threads, struct rng *r)
{
    return bench_model_on("cpu", cfg_path, layers, score, threads, r);
}
#endif
