/* rl-gen's decoding speed on a real model shape (default: SmolLM2-135M,
 * random weights): generated tokens/s with continuous batching and at batch 1,
 * achieved GFLOPS as a fraction of the sgemm rate of the same cores measured
 * in the same run, and peak memory.
 *   gen_bench [-c CONFIG] [-p PROMPTS=16] [-l PROMPT_LEN=64] [-n SAMPLES=8] [-g NEW=32]
 *             [-b BATCH=64] [-t THREADS=2] [-L LAYERS] [-s STOP_EVERY=0] [-P TOP_P=1] [-D DEVICE=cpu]
 * The full setting is -p 64 -n 8 -g 128 (long on 2 cores).
 * -s K makes every K-th token id a stop id, so that (the random model's
 * distribution being near uniform) responses end after about K tokens, at
 * lengths as varied as real ones, and slots free up at different times.
 * -D cuda runs it on the GPU (tests/gpu/run), where the sgemm ratio, a CPU
 * ceiling, is left out. The last lines repeat the figures as "key value". */
#include <fcntl.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bench_common.h"
#include "config.h"
#include "err.h"
#include "gen.h"
#include "rec.h"
#include "rng.h"

static double run(struct model *m, struct gen_opts *o, const char *prompts, struct gen_stats *st)
{
    struct tok_ctx tc = {.vocab = m->V, .eos = -1};
    struct rec_reader *r = rec_reader_open(prompts);
    int devnull = open("/dev/null", O_WRONLY);
    struct rec_writer *w = rec_writer_open(devnull, 1, "/dev/null");
    if (!r || gen_run(m, &tc, o, r, w, st))
        rl_die_err();
    rec_writer_close(w);
    rec_reader_close(r);
    close(devnull);
    return st->seconds;
}

int main(int argc, char **argv)
{
    rl_set_prog(argv[0]);
    const char *cfg_path = "tests/data/configs/smollm2-135m.json";
    int prompts = 16, plen = 64, n = 8, new_tok = 32, batch = 64, threads = 2, layers = 0, stop_every = 0, c;
    float top_p = 1;
    const char *device = "cpu";
    while ((c = getopt(argc, argv, "c:p:l:n:g:b:t:L:s:P:D:h")) != -1) {
        switch (c) {
        case 'c': cfg_path = optarg; break;
        case 'p': prompts = atoi(optarg); break;
        case 'l': plen = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'g': new_tok = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'L': layers = atoi(optarg); break;
        case 's': stop_every = atoi(optarg); break;
        case 'P': top_p = (float)atof(optarg); break;
        case 'D': device = optarg; break;
        default: printf("usage: gen_bench [-c CONFIG] [-p PROMPTS] [-l LEN] [-n SAMPLES] [-g NEW] [-b BATCH] [-t THREADS] [-L LAYERS] [-s STOP_EVERY] [-P TOP_P] [-D DEVICE]\n"); return c != 'h';
        }
    }
    struct rng r;
    rng_seed(&r, 1);
    struct model *m = bench_model_on(device, cfg_path, layers, false, threads, &r);
    const struct model_config cfg = m->cfg;
    char path[] = "/tmp/gen_bench.XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    for (int p = 0; p < prompts; p++) {
        fprintf(f, "{\"id\":\"p%d\",\"prompt_ids\":[", p);
        for (int i = 0; i < plen; i++)
            fprintf(f, "%s%d", i ? "," : "", (int)(rng_next(&r) % (uint64_t)cfg.vocab_size));
        fprintf(f, "]}\n");
    }
    fclose(f);
    struct gen_opts o = {.n = n, .sampler = {.temperature = 1, .top_p = top_p}, .max_new = new_tok,
                         .max_prompt = plen, .seed = 1, .batch = batch, .quiet = true};
    int32_t *stops = NULL;
    if (stop_every > 0) {
        stops = rl_malloc((size_t)(cfg.vocab_size / stop_every + 1) * sizeof *stops);
        for (int id = 0; id < cfg.vocab_size; id += stop_every)
            stops[o.n_stop_ids++] = id;
        o.stop_ids = stops;
    }
    /* batch 1 on a quarter of the prompts: the same per-token work, less waiting */
    int p1 = prompts / 4 > 0 ? prompts / 4 : 1;
    f = fopen(path, "r");
    char tmp1[] = "/tmp/gen_bench1.XXXXXX";
    FILE *g = fdopen(mkstemp(tmp1), "w");
    char line[1 << 16];
    for (int i = 0; i < p1 && fgets(line, sizeof line, f); i++)
        fputs(line, g);
    fclose(f);
    fclose(g);
    struct gen_stats big, one;
    if (!m->bk->host)                    /* a GPU's first run also sets up its libraries and workspaces */
        run(m, &o, tmp1, &one);
    double t_big = run(m, &o, path, &big);
    o.batch = 1;
    double t_one = run(m, &o, tmp1, &one);
    unlink(path);
    unlink(tmp1);
    double rate_big = big.tokens / t_big, rate_one = one.tokens / t_one;
    /* 2 flops per parameter per token, plus attention over ~plen + new/2 positions */
    double ctx = plen + new_tok / 2.0;
    double flops_tok = 2.0 * (double)m->n_params + 4.0 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * ctx;
    printf("rl-gen on %s (%d layers, %.1fM params, %s), %d prompts x %d tokens, n = %d, %d new tokens, top-p %g, "
           "%d threads", cfg_path, cfg.num_hidden_layers, m->n_params / 1e6, m->bk->detail ? m->bk->detail : device,
           prompts, plen, n, new_tok, top_p, threads);
    printf(stop_every > 0 ? ", every %d-th id a stop id:\n" : ":\n", stop_every);
    printf("  batch %d: %llu tokens in %.2f s = %.1f tokens/s (%.1f GFLOPS", batch, (unsigned long long)big.tokens,
           t_big, rate_big, rate_big * flops_tok / 1e9);
    if (m->bk->host) {
        double sgemm = bench_sgemm_gflops(batch, cfg.intermediate_size, cfg.hidden_size, 5);
        printf(" = %.0f%% of sgemm %.1f GFLOPS at M=%d", 100 * rate_big * flops_tok / 1e9 / sgemm, sgemm, batch);
    }
    printf(")\n");
    printf("  batch %d: %llu prefills, %llu decode steps, slots %.0f%% busy\n", batch, (unsigned long long)big.prefills,
           (unsigned long long)big.steps, 100.0 * big.rows / ((double)big.steps * batch));
    printf("  batch 1:  %llu tokens in %.2f s = %.1f tokens/s\n", (unsigned long long)one.tokens, t_one, rate_one);
    printf("  batched / batch-1 throughput: %.1fx (target >= 5x)\n", rate_big / rate_one);
    printf("  peak resident memory %.0f MiB\n", bench_peak_rss_mib());
    printf("gen_b%d_tokens_per_s %.0f\ngen_b%d_steps %llu\ngen_b%d_slots_busy %.2f\ngen_b1_tokens_per_s %.0f\n", batch,
           rate_big, batch, (unsigned long long)big.steps, batch, big.rows / ((double)big.steps * batch), rate_one);
    free(stops);
    model_close(m);
    return 0;
}
