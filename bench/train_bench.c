/* Training and scoring speed on a real model shape (default: SmolLM2-135M
 * from tests/data/configs), with 256-token sequences, beside the sgemm rate
 * of the same cores measured in the same run:
 *   dpo    a rl-dpo step: micro-batches of forward + loss + backward, clipping, AdamW
 *   rm     a rl-rm step on the same pairs (score head, Bradley-Terry loss)
 *   score  rl-score's forward passes (no gradients)
 * Reports pairs/s (responses/s for score), tokens/s, achieved GFLOPS as a
 * fraction of sgemm, and peak memory.
 *   train_bench [-m dpo|rm|score] [-c CONFIG.json] [-p PAIRS=8] [-u MICRO=2] [-n STEPS=2] [-t THREADS=2] [-L LAYERS] [-B]
 * -B: the trainers' --batch-gemm (one product per layer for the whole
 * micro-batch, not one per sequence). */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "config.h"
#include "dpo.h"
#include "err.h"
#include "model.h"
#include "optim.h"
#include "rm.h"
#include "rng.h"
#include "train.h"

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    const char *cfg_path = "tests/data/configs/smollm2-135m.json", *mode = "dpo";
    int pairs = 8, micro = 2, steps = 2, threads = 2, layers = 0, c;
    bool batch_gemm = false;
    while ((c = getopt(argc, argv, "m:c:p:u:n:t:L:Bh")) != -1) {
        switch (c) {
        case 'm': mode = optarg; break;
        case 'c': cfg_path = optarg; break;
        case 'p': pairs = atoi(optarg); break;
        case 'u': micro = atoi(optarg); break;
        case 'n': steps = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'L': layers = atoi(optarg); break;
        case 'B': batch_gemm = true; break;
        default:
            printf("usage: train_bench [-m dpo|rm|score] [-c CONFIG] [-p PAIRS] [-u MICRO] [-n STEPS] [-t THREADS] [-L LAYERS] [-B]\n");
            return c != 'h';
        }
    }
    bool rm = strcmp(mode, "dpo") != 0, score = !strcmp(mode, "score");
    struct rng r;
    rng_seed(&r, 1);
    struct model *m = bench_model(cfg_path, layers, rm, threads, &r);
    const struct model_config cfg = m->cfg;
    m->batch_invariant = !batch_gemm;
    /* 128-token prompt, two 128-token responses: 256-token sequences */
    enum { P = 128, R = 128 };
    struct dpo_data data = {0};
    struct rm_data rdata = {0};
    int32_t ids[P + 2 * R];
    for (int k = 0; k < pairs; k++) {
        for (int i = 0; i < P + 2 * R; i++)
            ids[i] = (int32_t)(rng_next(&r) % (uint64_t)cfg.vocab_size);
        dpo_data_add(&data, ids, P, ids + P, R, ids + P + R, R, -300, -310, 0, 0);
        rm_data_add(&rdata, ids, P, ids + P, R, ids + P + R, R, 0, 0);
    }
    struct dpo_params dp = {DPO_SIGMOID, 0.1, 0, 0};
    struct dpo_task dtask;
    struct rm_task rtask;
    dpo_task_init(&dtask, &data, &dp);
    rm_task_init(&rtask, &rdata, NULL, 0);
    struct train_task *task = rm ? &rtask.task : &dtask.task;
    int *tok = malloc(rdata.n_ids * sizeof *tok), len[2 * 4096];
    double out[2 * 4096];
    for (size_t i = 0; i < rdata.n_ids; i++) tok[i] = rdata.ids[i];
    for (int i = 0; i < 2 * pairs; i++) len[i] = P + R;
    struct adamw *opt = adamw_new(m->bk, m->n_params, &ADAMW_DEFAULTS);
    double best = 1e30;
    size_t idx[4096];
    for (int i = 0; i < pairs; i++) idx[i] = (size_t)i;
    for (int s = 0; s < steps + 1; s++) {            /* the first step warms up */
        double t0 = bench_now();
        struct train_metrics acc = {0};
        if (score) {                                 /* rl-score: forward only, 2*micro sequences a call */
            for (int i = 0; i < 2 * pairs; i += 2 * micro)
                if (rm_score(m, 2 * pairs - i < 2 * micro ? 2 * pairs - i : 2 * micro, len + i,
                             tok + (size_t)i * (P + R), out + i))
                    rl_die_err();
        } else {
            model_zero_grad(m);
            for (int i = 0; i < pairs; i += micro)
                if (task->micro(task, m, idx + i, pairs - i < micro ? pairs - i : micro, 1.0 / pairs, &acc))
                    rl_die_err();
            float coef = clip_coef(grad_norm(m->bk, m->g_mem, m->n_params), 1.0);
            train_adamw_step(opt, m, 1e-6f, 0.01f, coef);       /* the trainers' step */
        }
        double t = bench_now() - t0;
        if (s > 0 && t < best) best = t;
    }
    double tokens = (double)pairs * 2 * (P + R);
    int hd = cfg.head_dim, L = cfg.num_hidden_layers;
    /* 6 flops per parameter per token (forward 2, backward 4), plus causal
     * attention: QK^T and PV, 2 * 2 * heads * head_dim * (seq/2) per token
     * forward, three times that with the backward. */
    double passes = score ? 1 : 3;                   /* forward only, or forward + backward */
    double attn = passes * 4.0 * L * cfg.num_attention_heads * hd * ((P + R) / 2.0) * tokens;
    /* the LM head's matmul is absent for a score head; its embedding lookup costs nothing */
    double head = rm ? (double)cfg.vocab_size * cfg.hidden_size : 0;
    double flops = 2.0 * passes * ((double)m->n_params - head) * tokens + attn;
    int T = micro * 2 * (P + R);
    double sgemm = bench_sgemm_gflops(T, cfg.intermediate_size, cfg.hidden_size, 5);
    double sgemm2 = bench_sgemm_gflops(T, cfg.hidden_size, cfg.intermediate_size, 5);
    if (sgemm2 > sgemm) sgemm = sgemm2;
    double gf = flops / best / 1e9;
    printf("%s on %s (%d layers, %.1fM params), %d pairs of 256-token sequences, micro-batch %d, %d threads%s:\n",
           score ? "rl-score forward" : rm ? "rl-rm step" : "rl-dpo step", cfg_path, L, m->n_params / 1e6, pairs, micro,
           threads, batch_gemm ? ", --batch-gemm" : "");
    printf("  best of %d: %.2f s, %.2f %s/s, %.0f tokens/s\n", steps, best, (score ? 2 : 1) * pairs / best,
           score ? "responses" : "pairs", tokens / best);
    printf("  achieved %.1f GFLOPS = %.0f%% of OpenBLAS sgemm (%.1f GFLOPS on %dx%dx%d, same run)\n", gf,
           100 * gf / sgemm, sgemm, T, cfg.intermediate_size, cfg.hidden_size);
    printf("  peak resident memory %.0f MiB\n", bench_peak_rss_mib());
    adamw_free(opt);
    dpo_task_free(&dtask);
    rm_task_free(&rtask);
    dpo_data_free(&data);
    rm_data_free(&rdata);
    free(tok);
    model_close(m);
    return 0;
}
