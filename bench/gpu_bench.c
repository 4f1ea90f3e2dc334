/* GPU benchmark of the CUDA backend, each figure against a ceiling measured
 * in the same run:
 *   - cuBLAS GEMM rate, bf16 in/out with fp32 accumulation (the card's bf16
 *     rate: the MFU denominator), and fp32 in/out in the backend's GEMM mode;
 *   - device copy bandwidth (bytes read + written per second);
 *   - training step (forward + backward + AdamW) of a ~1B-parameter Llama
 *     (TinyLlama-1.1B's shape by default): tokens/s and model FLOP
 *     utilisation against the bf16 GEMM rate;
 *   - decode tokens/s at batch 1 and 64 against the memory-bandwidth floor
 *     (weights + KV cache bytes per step over the copy bandwidth), with the
 *     batch-invariant kernel (rl-gen's default) and with cuBLAS; and, with
 *     the former, rl-gen's whole step: a token drawn per sequence on the
 *     backend (sample_rows) or on the host's threads from the logits;
 *   - a decode step's launches against their floor: the microseconds from
 *     one launch to the next when empty kernels run back to back, times
 *     the step's launches (where the launches, not the bytes, bound a step,
 *     CUDA graphs would pay).
 * Prints one "key value" line per figure (tests/gpu/run makes the table).
 * Skips with a message when there is no GPU.
 *   gpu_bench [-c config.json] [-b batch] [-s seq] [-a micro_batches] [-L layers] [-d decode_steps]
 *             [-p decode_prompt] [-D device] [-C ceiling_gemm_size] [-t | -g] [-I]
 * (-C: the ceiling GEMM's m = n = k, 8192 by default; make check's run on
 * the CPU emulation of the kernels takes a small one)
 * (-a: a training step of that many forwards and backwards of batch x seq
 * tokens, one AdamW update, as the trainers accumulate gradients; -t: the
 * training step only; -g: the decode steps only; -p: the decode
 * steps' context, 128 tokens by default, where the weights' bytes
 * dominate a step; a long one weighs the KV cache's; -I: the training
 * step batch-invariant, one product per sequence, as the trainers run it
 * without --batch-gemm)
 * (-D devsim runs the same code on the CPU: a smoke test of this program.)
 * With RL_PROFILE=1 it also prints the per-op times of the last training
 * step and of the decode steps (lib/backend_prof.c); its rates are then
 * lowered by the profiler's waits. */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "bench_common.h"
#include "backend_prof.h"
#include "config.h"
#include "err.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "sample.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Wait for the GPU: a download is ordered after all earlier work. */
static void sync_gpu(const struct backend *bk, const float *any)
{
    float x;
    bk->download(&x, any, sizeof x);
}

static double copy_bandwidth(const struct backend *bk)
{
    size_t n = (size_t)1 << 28;                  /* 1 GiB of floats */
    float *a = bk->alloc(n * 4), *b = bk->alloc(n * 4);
    if (!a || !b)
        return -1;
    double best = 1e30;
    for (int r = 0; r < 6; r++) {
        sync_gpu(bk, a);
        double t0 = now();
        bk->copy(b, a, n);
        sync_gpu(bk, b);
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    bk->free(a), bk->free(b);
    return 2.0 * n * 4 / best / 1e9;           /* GB/s, read + write */
}

static const char *device = "cuda";

static struct model *random_model(const struct model_config *c)
{
    struct model *m = model_new(c, device);
    if (!m)
        rl_die_err();
    struct rng r;
    rng_seed(&r, 1);
    bench_random_weights(m, &r);
    return m;
}

/* Model FLOPs of one training step: 6 per weight per token for every matmul
 * weight (the embedding lookup is not a matmul; a tied head is), plus the
 * causal attention products, 6 * n^2 * q_dim per layer and sequence. */
static double train_flops(const struct model *m, int batch, int seq)
{
    double matmul_params = (double)m->n_params - (double)m->V * m->H * (m->cfg.tie_word_embeddings ? 0 : 1);
    double tokens = (double)batch * seq;
    return 6 * matmul_params * tokens + 6.0 * seq * seq * m->q_dim * m->L * batch;
}

/* accum: micro-batches of batch x seq a step (the trainers' gradient
 * accumulation: the backward adds, one AdamW update a step) */
static void bench_train(struct model *m, int batch, int seq, int accum, double bf16_tflops, bool invariant)
{
    int T = batch * seq;
    int *len = rl_malloc(batch * sizeof *len), *tok = rl_malloc(T * sizeof *tok), *tgt = rl_malloc(T * sizeof *tgt);
    float *dlogp = rl_malloc(T * sizeof *dlogp);
    for (int s = 0; s < batch; s++)
        len[s] = seq;
    for (int t = 0; t < T; t++) {
        tok[t] = (int)((t * 2654435761u) % (unsigned)m->V);
        tgt[t] = (t + 1) % seq ? (int)(((t + 1) * 2654435761u) % (unsigned)m->V) : -1;
        dlogp[t] = tgt[t] >= 0 ? -1.0f / ((float)T * accum) : 0;
    }
    struct model_batch b = {batch, len, tok, tgt};
    struct adamw_cfg ac = ADAMW_DEFAULTS;
    struct adamw *opt = adamw_new(m->bk, m->n_params, &ac);
    if (!opt)
        rl_die_err();
    m->batch_invariant = invariant;      /* off: one GEMM per layer for the batch (--batch-gemm) */
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        if (r == 3)
            backend_prof_reset();
        double t0 = now();
        model_zero_grad(m);
        for (int a = 0; a < accum; a++)
            if (model_forward(m, &b, MODEL_TRAIN) || model_backward(m, dlogp, NULL, NULL))
                rl_die_err();
        adamw_step(opt, m->w_mem, m->g_mem, 1e-5f);
        sync_gpu(m->bk, m->w_mem);
        double t = now() - t0;
        if (r > 0 && t < best)           /* the first step warms cuBLAS and the allocator */
            best = t;
    }
    double flops = accum * train_flops(m, batch, seq);
    printf("train_step_s %.4f\n", best);
    printf("train_tokens_per_s %.0f\n", (double)T * accum / best);
    printf("train_model_tflops %.1f\n", flops / best / 1e12);
    printf("train_mfu %.3f\n", flops / best / 1e12 / bf16_tflops);
    if (backend_prof_wanted())
        backend_prof_report(stdout, "one training step");
    adamw_free(opt);
    free(len), free(tok), free(tgt), free(dlogp);
}

/* How a timed decode step ends: with the logits on the host (the model's
 * own speed), or with a token per sequence drawn on the backend
 * (model_step_draw, rl-gen's way) or on the host's threads from the
 * downloaded logits (rl-gen's way before the sixth session, with top-k,
 * top-p or min-p). */
enum step_end { LOGITS, DRAW_BACKEND, DRAW_HOST };

/* Seconds per step of `steps` decode steps after two warm-up ones; and,
 * where launches is given, the CUDA backend's launches a timed step (-1
 * on other backends) and its graphs over the timed steps (RL_CUDA_GRAPHS). */
static double time_steps(struct model *m, struct kv_cache *c, int batch, int steps, enum step_end end,
                         const struct sampler *sampler, const int *slots, const int *ntok, int *tok, float *logits,
                         double *launches, struct cuda_graph_stats *graphs)
{
    long long l0 = -1;
    struct cuda_graph_stats g0 = {0};
    int threads = omp_get_max_threads();
    struct sample_scratch *sc = rl_calloc(threads, sizeof *sc);
    for (int i = 0; i < threads; i++)
        sample_scratch_init(&sc[i], m->V);
    struct rng *rng = rl_malloc(batch * sizeof *rng);
    double *u = rl_malloc(batch * sizeof *u), *lp = rl_malloc(batch * sizeof *lp);
    int *drawn = rl_malloc(batch * sizeof *drawn);
    for (int s = 0; s < batch; s++)
        rng_seed(&rng[s], (uint64_t)s + 1);
    double t0 = 0;
    for (int k = 0; k < steps + 2; k++) {
        if (k == 2) {                    /* two warm-up steps */
            sync_gpu(m->bk, m->w_mem);
            backend_prof_reset();
            t0 = now();
            l0 = backend_cuda_launches();
            backend_cuda_graph_stats(&g0);
        }
        for (int s = 0; s < batch; s++)
            tok[s] = (k * 31 + s * 17) % m->V;
        int rc;
        if (end == DRAW_BACKEND) {
            for (int s = 0; s < batch; s++)
                u[s] = rng_uniform_double(&rng[s]);
            rc = model_step_draw(m, c, batch, slots, ntok, tok, sampler, u, drawn, lp);
        } else {
            rc = model_step(m, c, batch, slots, ntok, tok, logits);
        }
        if (rc)
            rl_die_err();
        if (end == DRAW_HOST) {
#pragma omp parallel for schedule(dynamic) if (batch > 1)
            for (int s = 0; s < batch; s++)
                drawn[s] = sample_next(sampler, logits + (size_t)s * m->V, m->V, &rng[s],
                                       &sc[omp_get_thread_num()], &lp[s]);
        }
    }
    double per_step = (now() - t0) / steps;
    if (launches)
        *launches = l0 >= 0 ? (double)(backend_cuda_launches() - l0) / steps : -1;
    if (graphs && backend_cuda_graph_stats(graphs)) {
        graphs->launched -= g0.launched, graphs->updated -= g0.updated;
        graphs->instantiated -= g0.instantiated, graphs->paused -= g0.paused;
    }
    for (int i = 0; i < threads; i++)
        sample_scratch_free(&sc[i]);
    free(sc), free(rng), free(u), free(lp), free(drawn);
    return per_step;
}

/* Every slot back to the prompt that slot 0 holds first (its prefill shared). */
static void fork_prompt(struct kv_cache *c, int batch, int prompt)
{
    for (int s = 0; s < batch; s++)
        kv_cache_fork(c, s, 0, prompt);
}

/* Decode `steps` tokens for `batch` sequences after a prompt of `prompt` tokens each
 * (the prompt's prefill shared: one slot prefilled, then forked); then, in
 * the batch-invariant mode rl-gen uses, as many steps again with a token
 * drawn on the backend, then on the host, at temperature 1 and with top-p
 * 0.9. Each timing starts again from the prompt, so all decode the same
 * contexts. */
static void bench_decode(struct model *m, int batch, int prompt, int steps, bool invariant, double gbps,
                         double launch_us)
{
    int timed = steps > 2 ? steps - 2 : 1;
    struct kv_cache *c = kv_cache_new(m, batch, prompt + timed + 2);
    if (!c)
        rl_die_err();
    m->batch_invariant = invariant;
    int *slots = rl_malloc(batch * sizeof *slots), *ntok = rl_malloc(batch * sizeof *ntok);
    int *tok = rl_malloc((prompt > batch ? prompt : batch) * sizeof *tok);
    float *logits = rl_malloc((size_t)batch * m->V * sizeof *logits);
    for (int i = 0; i < prompt; i++)
        tok[i] = (i * 7919) % m->V;
    int zero = 0;
    if (model_step(m, c, 1, &zero, &prompt, tok, logits))
        rl_die_err();
    for (int s = 0; s < batch; s++) {
        slots[s] = s;
        ntok[s] = 1;
    }
    fork_prompt(c, batch, prompt);
    struct sampler plain = {.temperature = 1, .top_p = 1}, nucleus = {.temperature = 1, .top_p = 0.9f};
    double launches;
    struct cuda_graph_stats graphs = {0};
    double per_step = time_steps(m, c, batch, timed, LOGITS, &plain, slots, ntok, tok, logits, &launches, &graphs);
    /* bytes a step must read: every weight but the embedding table (one row
     * each), and the K/V of every cached position (2 or 4 bytes a value, as
     * the cache holds them); a weight is 2 bytes where
     * the products read the weights' bf16 copy (cuBLAS in bf16 mode, the
     * tensor-core matmul_rows), else 4 */
    double wsize = invariant ? (m->bk->detail && strstr(m->bk->detail, "tensor-core decoding") ? 2.0 : 4.0)
                             : (m->bk->detail && strstr(m->bk->detail, "bf16 GEMMs") && m->bk->mark_params ? 2.0 : 4.0);
    double wbytes = wsize * ((double)m->n_params - (m->cfg.tie_word_embeddings ? 0 : (double)m->V * m->H));
    double ctx = prompt + 2 + timed / 2.0;
    double kvbytes = 2.0 * kv_value_bytes(c) * m->L * m->kv_dim * ctx * batch;
    double floor_s = (wbytes + kvbytes) / (gbps * 1e9);   /* at the copy's bytes per second */
    const char *mode = invariant ? "rows" : "cublas";
    printf("decode_b%d_%s_tokens_per_s %.0f\n", batch, mode, batch / per_step);
    printf("decode_b%d_%s_floor_tokens_per_s %.0f\n", batch, mode, batch / floor_s);
    printf("decode_b%d_%s_of_floor %.3f\n", batch, mode, floor_s / per_step);
    if (launches > 0 && launch_us > 0) {  /* the launches alone, back to back, as empty kernels would run */
        printf("decode_b%d_%s_launches_per_step %.1f\n", batch, mode, launches);
        printf("decode_b%d_%s_launch_floor_tokens_per_s %.0f\n", batch, mode, batch / (launches * launch_us * 1e-6));
    }
    if (graphs.launched > 0)             /* RL_CUDA_GRAPHS: how the timed steps' graphs were made */
        printf("decode_b%d_%s_graphs %lld launched, %lld updated, %lld instantiated, %lld paused\n", batch, mode,
               graphs.launched, graphs.updated, graphs.instantiated, graphs.paused);
    if (backend_prof_wanted()) {
        char title[64];
        snprintf(title, sizeof title, "%d decode steps, batch %d, %s", timed, batch, mode);
        backend_prof_report(stdout, title);
    }
    for (int k = 0; invariant && k < 2; k++) {      /* temperature 1, then top-p 0.9 */
        const struct sampler *s = k ? &nucleus : &plain;
        fork_prompt(c, batch, prompt);
        double dev = time_steps(m, c, batch, timed, DRAW_BACKEND, s, slots, ntok, tok, logits, NULL, NULL);
        fork_prompt(c, batch, prompt);
        double host = time_steps(m, c, batch, timed, DRAW_HOST, s, slots, ntok, tok, logits, NULL, NULL);
        printf("decode_b%d_%s_%sdraw_tokens_per_s %.0f\n", batch, mode, k ? "topp_" : "", batch / dev);
        printf("decode_b%d_%s_%shostdraw_tokens_per_s %.0f\n", batch, mode, k ? "topp_" : "", batch / host);
    }
    kv_cache_free(c);
    free(slots), free(ntok), free(tok), free(logits);
}

int main(int argc, char **argv)
{
    rl_set_prog("gpu_bench");
    const char *cfg_path = "tests/data/configs/tinyllama-1.1b.json";
    int batch = 4, seq = 1024, accum = 1, layers = 0, steps = 34, prompt = 128, ceil_n = 8192, opt;
    bool train_only = false, decode_only = false, invariant = false;
    while ((opt = getopt(argc, argv, "c:b:s:a:L:d:p:D:C:tgIh")) != -1)
        switch (opt) {
        case 'c': cfg_path = optarg; break;
        case 'b': batch = atoi(optarg); break;
        case 's': seq = atoi(optarg); break;
        case 'a': accum = atoi(optarg); break;
        case 'L': layers = atoi(optarg); break;
        case 'd': steps = atoi(optarg); break;
        case 'p': prompt = atoi(optarg); break;
        case 'D': device = optarg; break;
        case 'C': ceil_n = atoi(optarg); break;
        case 't': train_only = true; break;
        case 'g': decode_only = true; break;
        case 'I': invariant = true; break;
        default:
            fprintf(stderr, "usage: gpu_bench [-c config.json] [-b batch] [-s seq] [-a micro_batches] [-L layers] [-d decode_steps] "
                            "[-p decode_prompt] [-D device] [-C ceiling_gemm_size] [-t | -g] [-I]\n");
            return opt == 'h' ? 0 : 2;
        }
    if (prompt < 1 || steps < 1 || batch < 1 || seq < 1 || accum < 1 || ceil_n < 1)
        rl_die("-p, -d, -b, -s, -a and -C take counts of at least 1");
    const struct backend *bk = backend_get(device);
    if (!bk) {
        printf("skip %s\n", rl_errmsg());
        return 0;
    }
    printf("device %s\n", bk->detail ? bk->detail : bk->name);
    double bf16 = backend_cuda_gemm_tflops(ceil_n, ceil_n, ceil_n, true);
    double ours = backend_cuda_gemm_tflops(ceil_n, ceil_n, ceil_n, false);
    double gbps = copy_bandwidth(bk), launch_us = backend_cuda_launch_us(2000);
    printf("gemm_bf16_tflops %.1f\n", bf16);
    printf("gemm_fp32io_tflops %.1f\n", ours);
    printf("copy_gbps %.0f\n", gbps);
    if (launch_us > 0)
        printf("launch_us %.2f\n", launch_us);
    fflush(stdout);

    struct model_config c;
    if (config_load(cfg_path, &c))
        rl_die_err();
    if (layers)
        c.num_hidden_layers = layers;
    struct model *m = random_model(&c);
    if (backend_prof_wanted()) {
        /* the training step's GEMM shapes, bf16 in/out against fp32 in/out */
        int T = batch * seq, H = m->H, shapes[][3] = {{T, m->qkv_dim, H}, {T, H, m->q_dim}, {T, 2 * m->ffn, H},
                                                     {T, H, m->ffn}, {T, m->V, H}, {T, H, m->V}};
        for (int i = 0; i < 6; i++)
            printf("gemm_shape %dx%dx%d bf16io %.1f fp32io %.1f\n", shapes[i][0], shapes[i][1], shapes[i][2],
                   backend_cuda_gemm_tflops(shapes[i][0], shapes[i][1], shapes[i][2], true),
                   backend_cuda_gemm_tflops(shapes[i][0], shapes[i][1], shapes[i][2], false));
    }
    printf("model_params %.3fB\n", m->n_params / 1e9);
    printf("train_shape %dx%d\n", batch, seq);
    printf("train_micro_batches %d\n", accum);
    fflush(stdout);
    if (!decode_only)
        bench_train(m, batch, seq, accum, bf16, invariant);
    fflush(stdout);
    for (int inv = 1; inv >= 0 && !train_only; inv--) {
        bench_decode(m, 1, prompt, steps, inv, gbps, launch_us);
        bench_decode(m, 64, prompt, steps, inv, gbps, launch_us);
        fflush(stdout);
    }
    model_close(m);
    return 0;
}
