/* Model benchmark on the SmolLM2-135M shape (hidden 576, intermediate 1536,
 * 30 layers, 9 heads, 3 KV heads, vocab 49152, tied; random weights):
 * sgemm reference rate, training step (forward + backward + AdamW) on
 * batch x seq tokens, prefill and decode (batch 1 and 8) with the KV cache,
 * peak RSS. One line per figure; `model_bench -h` for options. */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "err.h"
#include "model.h"
#include "optim.h"

void openblas_set_num_threads(int);
int openblas_get_parallel(void);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static float nrand(void)
{
    double u[2];
    for (int i = 0; i < 2; i++) {
        rs ^= rs >> 12, rs ^= rs << 25, rs ^= rs >> 27;
        u[i] = ((rs * 2685821657736338717ull) >> 11) / 9007199254740992.0;
    }
    return (float)(sqrt(-2 * log(1 - u[0])) * cos(2 * M_PI * u[1]));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* best of `reps` runs of an M x N x K NT sgemm (the shape of a linear
 * layer): through OpenBLAS's own threads (bk NULL) or the backend's matmul */
static double sgemm_per_cpu_s;     /* best GFLOP per CPU-second seen */

static double sgemm_gflops(const struct backend *bk, int M, int N, int K, int reps)
{
    float *a = calloc((size_t)M * K, 4), *b = calloc((size_t)N * K, 4), *c = calloc((size_t)M * N, 4);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = nrand();
    for (size_t i = 0; i < (size_t)N * K; i++) b[i] = nrand();
    double best = 1e9, best_cpu = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu_now();
        if (bk)
            bk->matmul(false, true, M, N, K, 1, a, K, b, K, 0, c, N);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        double t = now() - t0, ct = cpu_now() - c0;
        if (t < best) best = t;
        if (ct < best_cpu) best_cpu = ct;
    }
    free(a), free(b), free(c);
    double rate = 2.0 * M * N * K / best_cpu / 1e9;
    if (rate > sgemm_per_cpu_s)
        sgemm_per_cpu_s = rate;
    return 2.0 * M * N * K / best / 1e9;
}

int main(int argc, char **argv)
{
    int threads = 2, batch = 4, seq = 256, steps = 3, layers = 30, decode_steps = 16, prompt = 128;
    int opt;
    while ((opt = getopt(argc, argv, "t:b:s:n:L:h")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 's': seq = atoi(optarg); break;
        case 'n': steps = atoi(optarg); break;
        case 'L': layers = atoi(optarg); break;
        default:
            printf("usage: model_bench [-t THREADS=2] [-b BATCH=4] [-s SEQ=256] [-n STEPS=3] [-L LAYERS=30]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    omp_set_num_threads(threads);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct model_config c = {0};
    snprintf(c.architecture, sizeof c.architecture, "LlamaForCausalLM");
    snprintf(c.model_type, sizeof c.model_type, "llama");
    c.head = HEAD_LM;
    c.hidden_size = 576;
    c.intermediate_size = 1536;
    c.num_hidden_layers = layers;
    c.num_attention_heads = 9;
    c.num_key_value_heads = 3;
    c.head_dim = 64;
    c.vocab_size = 49152;
    c.max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 100000;
    c.tie_word_embeddings = true;
    struct model *m = model_new(&c, "cpu");
    if (!m)
        rl_die_err();
    for (int i = 0; i < m->n_params_tensors; i++)
        if (m->params[i].init != 1)                       /* hf_init: normal */
            for (size_t j = 0; j < m->params[i].numel; j++)
                m->w_mem[m->params[i].offset + j] = 0.02f * nrand();
    printf("model: SmolLM2-135M shape, %d layers, %.1fM parameters, %d threads\n", layers,
           m->n_params / 1e6, threads);

    /* the reference: OpenBLAS's own threading on the same cores, on the
     * shapes of the MLP linears; then back to one BLAS thread per OpenMP
     * thread, which is how the CPU backend runs (backend_cpu.c) */
    int T = batch * seq;
    openblas_set_num_threads(threads);
    double gf_ob = fmax(sgemm_gflops(NULL, T, 1536, 576, 8), sgemm_gflops(NULL, T, 576, 1536, 8));
    if (openblas_get_parallel() == 1)     /* pthread build: one BLAS thread per OpenMP thread */
        openblas_set_num_threads(1);
    else                                   /* OpenMP build: its thread count is OpenMP's */
        omp_set_num_threads(threads);
    double gf_bk = fmax(sgemm_gflops(m->bk, T, 1536, 576, 8), sgemm_gflops(m->bk, T, 576, 1536, 8));
    double gf_sgemm = fmax(gf_ob, gf_bk);
    printf("sgemm: OpenBLAS %d threads %.1f GFLOPS, backend matmul %.1f GFLOPS (best of %dx1536x576 "
           "and %dx576x1536, NT); reference %.1f\n", threads, gf_ob, gf_bk, T, T, gf_sgemm);

    /* training step */
    int *lens = malloc(batch * sizeof *lens), *tok = malloc(T * sizeof *tok), *tgt = malloc(T * sizeof *tgt);
    float *dlogp = malloc(T * sizeof *dlogp);
    for (int s = 0; s < batch; s++)
        lens[s] = seq;
    for (int t = 0; t < T; t++)
        tok[t] = (int)((unsigned)(nrand() * 1e6) % (unsigned)c.vocab_size);
    for (int t = 0; t < T; t++) {
        tgt[t] = (t + 1) % seq ? tok[t + 1] : -1;
        dlogp[t] = -1.0f / T;
    }
    struct adamw_cfg ac = ADAMW_DEFAULTS;
    struct adamw *o = adamw_new(m->bk, m->n_params, &ac);
    struct model_batch b = {batch, lens, tok, tgt};
    /* the first step allocates (warm-up); then the best and the mean of
     * `steps` steps: other jobs on a shared machine only ever slow a step */
    double best[3] = {1e9, 0, 0}, sum = 0, best_cpu = 1e9;
    for (int it = 0; it <= steps; it++) {
        double t0 = now(), c0 = cpu_now();
        if (model_forward(m, &b, MODEL_TRAIN) < 0)
            rl_die_err();
        double t1 = now();
        model_zero_grad(m);
        model_backward(m, dlogp, NULL, NULL);
        double t2 = now();
        clip_grad_norm(m->bk, m->g_mem, m->n_params, 1.0);
        adamw_step(o, m->w_mem, m->g_mem, 1e-4f);
        double t3 = now();
        if (it > 0) {
            sum += t3 - t0;
            best_cpu = fmin(best_cpu, cpu_now() - c0);
            if (t3 - t0 < best[0] + best[1] + best[2]) {
                best[0] = t1 - t0;
                best[1] = t2 - t1;
                best[2] = t3 - t2;
            }
        }
    }
    double step = best[0] + best[1] + best[2];
    double attn = 6.0 * layers * batch * (double)c.num_attention_heads * 64 * seq * (seq + 1);
    double flops = 6.0 * m->n_params * T + attn;
    /* the reference again after the training steps: the better of the two */
    double gf_after = fmax(sgemm_gflops(m->bk, T, 1536, 576, 8), sgemm_gflops(m->bk, T, 576, 1536, 8));
    if (gf_after > gf_sgemm) {
        gf_sgemm = gf_after;
        printf("sgemm: backend matmul after training %.1f GFLOPS; reference %.1f\n", gf_after, gf_sgemm);
    }
    printf("train: %d x %d tokens, best of %d steps: %.2f s/step (forward %.2f, backward %.2f, clip+AdamW %.2f; "
           "mean %.2f s), %.0f tokens/s, %.1f GFLOPS = %.0f%% of sgemm\n",
           batch, seq, steps, step, best[0], best[1], best[2], sum / steps, T / step, flops / step / 1e9,
           100 * flops / step / 1e9 / gf_sgemm);
    /* CPU time (run with OMP_WAIT_POLICY=passive so that waiting costs
     * none): the share of sgemm's work per CPU-second, a figure that other
     * jobs on the machine disturb less than wall time */
    printf("train: %.1f GFLOP per CPU-second vs sgemm %.1f: %.0f%% (CPU-time ratio; meaningful with "
           "OMP_WAIT_POLICY=passive)\n", flops / best_cpu / 1e9, sgemm_per_cpu_s,
           100 * flops / best_cpu / 1e9 / sgemm_per_cpu_s);
    printf("train: peak RSS %.0f MiB\n", peak_rss_mib());
    adamw_free(o);

    /* prefill and decode through the KV cache (best of 2 prefills; decode:
     * the median step) */
    int nseq = batch < 8 ? batch : 8;
    struct kv_cache *kv = kv_cache_new(m, 8, prompt + seq + decode_steps + 1);
    float *logits = malloc((size_t)8 * c.vocab_size * sizeof *logits);
    int slots[8] = {0, 1, 2, 3, 4, 5, 6, 7}, ntok[8], next[8];
    double tp = 1e9, dt[256];
    for (int rep = 0; rep < 2; rep++) {
        for (int s = 0; s < nseq; s++) {
            kv_cache_clear(kv, s);
            ntok[s] = seq;
        }
        double t0 = now();
        if (model_step(m, kv, nseq, slots, ntok, tok, logits) < 0)
            rl_die_err();
        tp = fmin(tp, now() - t0);
    }
    printf("prefill: %d x %d tokens: %.0f tokens/s\n", nseq, seq, nseq * seq / tp);
    if (decode_steps > 256)
        decode_steps = 256;
    for (int inv = 1; inv >= 0; inv--) {
        m->batch_invariant = inv;
        for (int nb = 1; nb <= 8; nb += 7) {
            for (int s = 0; s < nb; s++) {
                kv_cache_clear(kv, s);
                ntok[s] = prompt;
                next[s] = tok[s];
            }
            model_step(m, kv, nb, slots, ntok, tok, logits);
            for (int s = 0; s < nb; s++)
                ntok[s] = 1;
            for (int i = 0; i < decode_steps; i++) {
                double t0 = now();
                if (model_step(m, kv, nb, slots, ntok, next, logits) < 0)
                    rl_die_err();
                dt[i] = now() - t0;
            }
            qsort(dt, decode_steps, sizeof *dt, cmp_double);
            printf("decode: batch %d after a %d-token prompt%s: %.1f tokens/s (median step %.1f ms, best %.1f ms)\n",
                   nb, prompt, inv ? "" : ", batch_invariant off", nb / dt[decode_steps / 2],
                   dt[decode_steps / 2] * 1e3, dt[0] * 1e3);
        }
    }
    printf("peak RSS %.0f MiB\n", peak_rss_mib());
    kv_cache_free(kv);
    model_close(m);
    free(lens), free(tok), free(tgt), free(dlogp), free(logits);
    return 0;
}
